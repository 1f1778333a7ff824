// Shared plumbing of the FFmpeg-based encoders (mp4.cpp, image.cpp): owning handles,
// error strings, RGB -> encoder pixel format conversion, packet draining.
#pragma once

#include <functional>
#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libswscale/swscale.h>
}

namespace vgen::media::libav {

struct CodecContextDeleter {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct FrameDeleter {
  void operator()(AVFrame* p) const { av_frame_free(&p); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
using CodecContext = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using Frame = std::unique_ptr<AVFrame, FrameDeleter>;
using Packet = std::unique_ptr<AVPacket, PacketDeleter>;

// av_strerror's text for an AVERROR code.
std::string error_string(int errnum);

// Sends libav's log lines to spdlog (errors as errors, warnings as warnings, info such as
// libx264's statistics as debug), once per process, so encoders do not write to stderr.
void route_logs_to_spdlog();

// Finds an encoder by name, allocates its context; throws naming `what` when FFmpeg was
// built without it.
CodecContext alloc_encoder(const char* name, const std::string& what);
// avcodec_open2; throws "<what>: cannot open the <encoder> encoder: <av error>".
void open_encoder(AVCodecContext* ctx, const std::string& what);

// A writable frame of the given format and size.
Frame alloc_frame(AVPixelFormat format, int width, int height, const std::string& what);

// Packed RGB24 (full range) -> `format` of the same size through swscale.
class RgbConverter {
 public:
  // colorspace: SWS_CS_ITU601 / SWS_CS_ITU709 matrix for YUV targets; full_range: JPEG
  // (0-255) rather than MPEG (16-235) levels in the output.
  RgbConverter(int width, int height, AVPixelFormat format, int colorspace, bool full_range, const std::string& what);
  ~RgbConverter();
  RgbConverter(const RgbConverter&) = delete;
  RgbConverter& operator=(const RgbConverter&) = delete;

  void convert(const uint8_t* rgb, AVFrame* frame);

 private:
  SwsContext* sws_ = nullptr;
  int width_, height_;
};

// Sends `frame` (nullptr: flush) and hands every packet the encoder has ready to `sink`.
void encode(AVCodecContext* ctx, const AVFrame* frame, AVPacket* packet, const std::function<void(AVPacket*)>& sink,
            const std::string& what);

}  // namespace vgen::media::libav
