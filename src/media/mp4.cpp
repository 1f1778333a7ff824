// MP4 writer: RGB24 -> yuv420p (BT.709, limited range, tagged as such) -> libx264 -> mp4
// muxer with +faststart (the muxer rewrites the file so the moov atom comes first).
//
// Built with FFmpeg's libraries when they are found (the normal build); a build without them
// pipes the same raw frames through an `ffmpeg` program instead ($VGEN_FFMPEG, else the one
// on PATH), with the same encoder settings.
#include "media/mp4.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "media/temp_file.h"

#ifdef VGEN_WITH_LIBAV
#include "media/libav.h"
extern "C" {
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
}
#endif

namespace vgen::media {
namespace {

constexpr std::array<std::string_view, 10> kX264Presets = {
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"};

#ifdef VGEN_WITH_LIBAV
struct OutputContextDeleter {
  void operator()(AVFormatContext* fmt) const {
    if (fmt->pb) avio_closep(&fmt->pb);
    avformat_free_context(fmt);
  }
};
using OutputContext = std::unique_ptr<AVFormatContext, OutputContextDeleter>;
#endif

void check_frames(const Tensor& frames, const VideoEncodeOptions& options, const std::string& what) {
  VGEN_CHECK(frames.defined() && frames.dtype() == DType::U8 && frames.dim() == 4 && frames.size(3) == 3,
             "{}: frames must be a U8 [F, H, W, 3] RGB tensor, got {}", what,
             frames.defined() ? frames.str() : "an undefined tensor");
  const int64_t f = frames.size(0), h = frames.size(1), w = frames.size(2);
  VGEN_CHECK(f > 0 && h > 0 && w > 0, "{}: no pixels to encode in {}", what, frames.str());
  VGEN_CHECK(w % 2 == 0 && h % 2 == 0,
             "{}: H.264 yuv420p needs an even width and height, got {}x{} (width x height)", what, w, h);
  VGEN_CHECK(std::isfinite(options.fps) && options.fps > 0, "{}: fps must be positive, got {}", what, options.fps);
  VGEN_CHECK(options.crf >= 0 && options.crf <= 51, "{}: crf must be in 0..51, got {}", what, options.crf);
  VGEN_CHECK(std::find(kX264Presets.begin(), kX264Presets.end(), options.preset) != kX264Presets.end(),
             "{}: unknown libx264 preset '{}' (valid: ultrafast, superfast, veryfast, faster, fast, medium, slow, "
             "slower, veryslow, placebo)",
             what, options.preset);
}

#ifdef VGEN_WITH_LIBAV
// Expects check_frames to have passed.
void encode_to_file(const std::string& file, const Tensor& input, const VideoEncodeOptions& options,
                    const std::string& what) {
  const Tensor frames = input.to(Device::cpu()).contiguous();
  const int num_frames = static_cast<int>(frames.size(0));
  const int height = static_cast<int>(frames.size(1)), width = static_cast<int>(frames.size(2));
  // Exact rational rate: 16 -> 16/1, 23.976 -> 2997/125, 29.97002997 -> 30000/1001.
  const AVRational frame_rate = av_d2q(options.fps, 1001000);
  VGEN_CHECK(frame_rate.num > 0 && frame_rate.den > 0, "{}: fps {} has no usable rational form", what, options.fps);

  libav::CodecContext ctx = libav::alloc_encoder("libx264", what);
  ctx->width = width;
  ctx->height = height;
  ctx->pix_fmt = AV_PIX_FMT_YUV420P;
  ctx->framerate = frame_rate;
  ctx->time_base = av_inv_q(frame_rate);  // one tick per frame
  ctx->sample_aspect_ratio = AVRational{1, 1};
  ctx->color_range = AVCOL_RANGE_MPEG;
  ctx->colorspace = AVCOL_SPC_BT709;
  ctx->color_primaries = AVCOL_PRI_BT709;
  ctx->color_trc = AVCOL_TRC_BT709;
  ctx->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;  // mp4 keeps SPS/PPS in the avcC box
  av_opt_set(ctx->priv_data, "preset", options.preset.c_str(), 0);
  av_opt_set_double(ctx->priv_data, "crf", options.crf, 0);
  libav::open_encoder(ctx.get(), what);

  // "file:" keeps paths containing ':' from being read as protocols; the muxer reopens this
  // URL to move the moov atom (faststart).
  const std::string url = "file:" + file;
  AVFormatContext* raw_fmt = nullptr;
  int ret = avformat_alloc_output_context2(&raw_fmt, nullptr, "mp4", url.c_str());
  VGEN_CHECK(ret >= 0, "{}: cannot set up the mp4 muxer: {}", what, libav::error_string(ret));
  OutputContext fmt(raw_fmt);
  AVStream* stream = avformat_new_stream(fmt.get(), nullptr);
  VGEN_CHECK(stream != nullptr, "{}: cannot add a video stream", what);
  ret = avcodec_parameters_from_context(stream->codecpar, ctx.get());
  VGEN_CHECK(ret >= 0, "{}: cannot copy the encoder parameters: {}", what, libav::error_string(ret));
  stream->time_base = ctx->time_base;
  stream->avg_frame_rate = frame_rate;

  ret = avio_open(&fmt->pb, url.c_str(), AVIO_FLAG_WRITE);
  VGEN_CHECK(ret >= 0, "{}: cannot open '{}': {}", what, file, libav::error_string(ret));
  AVDictionary* muxer_options = nullptr;
  av_dict_set(&muxer_options, "movflags", "+faststart+use_metadata_tags", 0);
  for (const auto& [key, value] : options.metadata) av_dict_set(&fmt->metadata, key.c_str(), value.c_str(), 0);
  ret = avformat_write_header(fmt.get(), &muxer_options);
  av_dict_free(&muxer_options);
  VGEN_CHECK(ret >= 0, "{}: cannot write the mp4 header: {}", what, libav::error_string(ret));

  libav::RgbConverter converter(width, height, AV_PIX_FMT_YUV420P, SWS_CS_ITU709, /*full_range=*/false, what);
  libav::Frame frame = libav::alloc_frame(AV_PIX_FMT_YUV420P, width, height, what);
  libav::Packet packet(av_packet_alloc());
  VGEN_CHECK(packet != nullptr, "{}: out of memory allocating a packet", what);
  const auto write_packet = [&](AVPacket* p) {
    av_packet_rescale_ts(p, ctx->time_base, stream->time_base);
    p->stream_index = stream->index;
    const int r = av_interleaved_write_frame(fmt.get(), p);
    VGEN_CHECK(r >= 0, "{}: cannot write a packet: {}", what, libav::error_string(r));
  };

  const uint8_t* pixels = frames.data<uint8_t>();
  const size_t frame_bytes = static_cast<size_t>(width) * height * 3;
  for (int i = 0; i < num_frames; ++i) {
    ret = av_frame_make_writable(frame.get());
    VGEN_CHECK(ret >= 0, "{}: cannot reuse the frame buffer: {}", what, libav::error_string(ret));
    converter.convert(pixels + i * frame_bytes, frame.get());
    frame->pts = i;
    libav::encode(ctx.get(), frame.get(), packet.get(), write_packet, what);
  }
  libav::encode(ctx.get(), nullptr, packet.get(), write_packet, what);  // flush delayed (B-)frames

  ret = av_write_trailer(fmt.get());
  VGEN_CHECK(ret >= 0, "{}: cannot finish the mp4 file: {}", what, libav::error_string(ret));
  ret = avio_closep(&fmt->pb);
  VGEN_CHECK(ret >= 0, "{}: cannot close '{}': {}", what, file, libav::error_string(ret));
}
#endif

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string metadata_args(const Metadata& metadata) {
  std::string out;
  for (const auto& [key, value] : metadata) out += "-metadata " + quoted(key + "=" + value) + " ";
  return out;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Whether /bin/sh would find `program`: a path (it holds a '/') to an executable file, or an
// executable of that name in a folder of $PATH.
bool program_found(const std::string& program) {
  if (program.empty()) return false;
  if (program.find('/') != std::string::npos) return is_executable_file(program);
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const size_t colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    if (is_executable_file((dir.empty() ? std::string(".") : std::string(dir)) + "/" + program)) return true;
    if (colon == std::string_view::npos) return false;
    dirs.remove_prefix(colon + 1);
  }
}

#ifndef VGEN_WITH_LIBAV
// The ffmpeg program a build without FFmpeg's libraries encodes through.
std::string ffmpeg_program() {
  const char* env = std::getenv("VGEN_FFMPEG");
  return env != nullptr && *env != '\0' ? env : "ffmpeg";
}
#endif

std::string install_hint() {
#ifdef VGEN_WITH_LIBAV
  return "give a path to an ffmpeg program with libx264";
#else
  return "this build has no FFmpeg libraries: install FFmpeg or set VGEN_FFMPEG to an ffmpeg program with libx264";
#endif
}

// While alive, SIGPIPE is blocked on this thread. A write into a pipe whose reader has gone
// then fails with EPIPE instead of ending the process (and a server with it); a SIGPIPE the
// write left pending is taken before the thread's mask is restored.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeBlocked() {
    if (!was_pending_) {
      const timespec now{};
      while (sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{}, previous_{};
  bool was_pending_ = false;
};

// The same encode through an ffmpeg program reading raw RGB frames on its standard input.
// Expects check_frames to have passed.
void encode_through_program(const std::string& program, const std::string& file, const Tensor& input,
                            const VideoEncodeOptions& options, const std::string& what) {
  VGEN_CHECK(program_found(program), "{}: no program '{}' found to encode with ({})", what, program, install_hint());
  const Tensor frames = input.to(Device::cpu()).contiguous();
  const std::string command = fmt::format(
      "{} -hide_banner -loglevel error -y -f rawvideo -pix_fmt rgb24 -s {}x{} -framerate {:.10g} -i - "
      "-vf scale=out_color_matrix=bt709:out_range=tv -c:v libx264 -preset {} -crf {} -pix_fmt yuv420p "
      "-color_range tv -colorspace bt709 -color_primaries bt709 -color_trc bt709 -movflags +faststart+use_metadata_tags "
      "{}-f mp4 {}",
      quoted(program), frames.size(2), frames.size(1), options.fps, options.preset, options.crf, metadata_args(options.metadata),
      quoted(file));
  const size_t bytes = frames.nbytes();
  size_t written = 0;
  int status = -1;
  {
    const SigpipeBlocked guard;  // over pclose too: it flushes what fwrite buffered
    FILE* pipe = popen(command.c_str(), "w");
    VGEN_CHECK(pipe != nullptr, "{}: '{}' could not be started: {}", what, program, std::strerror(errno));
    written = std::fwrite(frames.data<uint8_t>(), 1, bytes, pipe);
    status = pclose(pipe);
  }
  const bool exited = status != -1 && WIFEXITED(status);
  if (exited && WEXITSTATUS(status) == 0 && written == bytes) return;
  // /bin/sh runs it: a program killed by signal N leaves the shell's exit status 128 + N.
  const int code = exited ? WEXITSTATUS(status) : -1;
  const std::string how = status == -1           ? "its exit status is unknown"
                          : WIFSIGNALED(status)  ? fmt::format("killed by signal {}", WTERMSIG(status))
                          : code > 128 && code - 128 <= SIGRTMAX
                              ? fmt::format("exit status {}: killed by signal {}", code, code - 128)
                              : fmt::format("exit status {}", code);
  fail("{}: '{}' failed ({}{}); {}", what, program, how,
       written == bytes ? "" : fmt::format(", it took {} of the {} bytes of frames", written, bytes),
       install_hint());
}

#ifndef VGEN_WITH_LIBAV
void encode_to_file(const std::string& file, const Tensor& input, const VideoEncodeOptions& options,
                    const std::string& what) {
  encode_through_program(ffmpeg_program(), file, input, options, what);
}
#endif

// Checks the frames (before any file exists), encodes into a temporary file beside `path` and
// renames it into place.
template <class Encode>
void write_through_temp(const std::string& path, const Tensor& frames, const VideoEncodeOptions& options,
                        const std::string& what, Encode encode) {
  check_frames(frames, options, what);
  TempFile temp(path);
  encode(temp.path(), frames, options, what);
  temp.rename_to(path);
}

}  // namespace

std::string mp4_writer_problem() {
#ifdef VGEN_WITH_LIBAV
  return "";
#else
  const std::string program = ffmpeg_program();
  return program_found(program) ? "" : fmt::format("no program '{}' found to encode MP4s with ({})", program, install_hint());
#endif
}

void write_mp4(const std::string& path, const Tensor& frames, const VideoEncodeOptions& options) {
  write_through_temp(path, frames, options, fmt::format("writing MP4 '{}'", path), encode_to_file);
}

void write_mp4_through_program(const std::string& program, const std::string& path, const Tensor& frames,
                               const VideoEncodeOptions& options) {
  write_through_temp(path, frames, options, fmt::format("writing MP4 '{}' through '{}'", path, program),
                     [&](const std::string& file, const Tensor& f, const VideoEncodeOptions& o, const std::string& what) {
                       encode_through_program(program, file, f, o, what);
                     });
}

std::vector<uint8_t> encode_mp4(const Tensor& frames, const VideoEncodeOptions& options) {
  const std::string what = "encoding MP4";
  check_frames(frames, options, what);
  TempFile temp((std::filesystem::temp_directory_path() / "vgen-encode.mp4").string());
  encode_to_file(temp.path(), frames, options, what);
  return read_file(temp.path());
}

}  // namespace vgen::media
