#include "media/libav.h"

#include <cstdarg>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/error.h"

extern "C" {
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
}

namespace vgen::media::libav {
namespace {

void log_to_spdlog(void* avcl, int level, const char* format, va_list args) {
  if (level > AV_LOG_INFO) return;
  // libav may emit one line in several calls; assemble it per thread.
  thread_local std::string line;
  thread_local int print_prefix = 1;
  char piece[1024];
  av_log_format_line2(avcl, level, format, args, piece, sizeof(piece), &print_prefix);
  line += piece;
  if (line.empty() || line.back() != '\n') return;
  line.pop_back();
  const spdlog::level::level_enum spd_level = level <= AV_LOG_ERROR     ? spdlog::level::err
                                              : level <= AV_LOG_WARNING ? spdlog::level::warn
                                                                        : spdlog::level::debug;
  spdlog::log(spd_level, "libav: {}", line);
  line.clear();
}

}  // namespace

std::string error_string(int errnum) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(errnum, text, sizeof(text));
  return text;
}

void route_logs_to_spdlog() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_callback(log_to_spdlog); });
}

CodecContext alloc_encoder(const char* name, const std::string& what) {
  route_logs_to_spdlog();
  const AVCodec* codec = avcodec_find_encoder_by_name(name);
  VGEN_CHECK(codec != nullptr, "{}: this FFmpeg build has no '{}' encoder", what, name);
  CodecContext ctx(avcodec_alloc_context3(codec));
  VGEN_CHECK(ctx != nullptr, "{}: out of memory allocating the '{}' encoder", what, name);
  return ctx;
}

void open_encoder(AVCodecContext* ctx, const std::string& what) {
  const int ret = avcodec_open2(ctx, ctx->codec, nullptr);
  VGEN_CHECK(ret >= 0, "{}: cannot open the '{}' encoder ({}x{}): {}", what, ctx->codec->name, ctx->width,
             ctx->height, error_string(ret));
}

Frame alloc_frame(AVPixelFormat format, int width, int height, const std::string& what) {
  Frame frame(av_frame_alloc());
  VGEN_CHECK(frame != nullptr, "{}: out of memory allocating a frame", what);
  frame->format = format;
  frame->width = width;
  frame->height = height;
  const int ret = av_frame_get_buffer(frame.get(), 0);
  VGEN_CHECK(ret >= 0, "{}: cannot allocate a {}x{} frame: {}", what, width, height, error_string(ret));
  return frame;
}

RgbConverter::RgbConverter(int width, int height, AVPixelFormat format, int colorspace, bool full_range,
                           const std::string& what)
    : width_(width), height_(height) {
  // No scaling happens; the flags choose exact rounding, chroma computed from every input
  // pixel before subsampling, and results that do not depend on the CPU's SIMD path.
  sws_ = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, format,
                        SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP | SWS_BITEXACT, nullptr, nullptr,
                        nullptr);
  VGEN_CHECK(sws_ != nullptr, "{}: swscale cannot convert RGB24 to {} at {}x{}", what,
             av_get_pix_fmt_name(format), width, height);
  const int* coefficients = sws_getCoefficients(colorspace);
  sws_setColorspaceDetails(sws_, coefficients, /*srcRange=*/1, coefficients, full_range ? 1 : 0, 0, 1 << 16,
                           1 << 16);
}

RgbConverter::~RgbConverter() { sws_freeContext(sws_); }

void RgbConverter::convert(const uint8_t* rgb, AVFrame* frame) {
  const uint8_t* src[1] = {rgb};
  const int src_stride[1] = {3 * width_};
  sws_scale(sws_, src, src_stride, 0, height_, frame->data, frame->linesize);
}

void encode(AVCodecContext* ctx, const AVFrame* frame, AVPacket* packet, const std::function<void(AVPacket*)>& sink,
            const std::string& what) {
  int ret = avcodec_send_frame(ctx, frame);
  VGEN_CHECK(ret >= 0, "{}: the '{}' encoder rejected a frame: {}", what, ctx->codec->name, error_string(ret));
  for (;;) {
    ret = avcodec_receive_packet(ctx, packet);
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
    VGEN_CHECK(ret >= 0, "{}: the '{}' encoder failed: {}", what, ctx->codec->name, error_string(ret));
    sink(packet);
    av_packet_unref(packet);
  }
}

}  // namespace vgen::media::libav
