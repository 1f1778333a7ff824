// MP4 output checked with ffprobe/ffmpeg: codec, pixel format, size, frame count, frame
// rate, faststart layout, decoded pixels; plus the error paths and atomic writes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "media/frames.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "support/command.h"
#include "support/parity.h"

using namespace vgen;
using namespace vgen::media;
using vgen::testing::fresh_dir;
using vgen::testing::listing;
using vgen::testing::run_command;
using vgen::testing::shell_quote;
namespace fs = std::filesystem;

namespace {

// A gradient that moves with the frame index, so every frame differs.
Tensor moving_gradient(int64_t frames, int64_t height, int64_t width) {
  Tensor t = Tensor::empty({frames, height, width, 3}, DType::U8);
  uint8_t* p = t.data<uint8_t>();
  for (int64_t f = 0; f < frames; ++f)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        uint8_t* px = p + ((f * height + y) * width + x) * 3;
        px[0] = static_cast<uint8_t>(std::lround(255.0 * x / (width - 1)));
        px[1] = static_cast<uint8_t>(std::lround(255.0 * y / (height - 1)));
        px[2] = static_cast<uint8_t>((x + y + 8 * f) % 256);
      }
  return t;
}

nlohmann::json probe(const std::string& path) {
  const auto out = run_command("ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                               "stream=codec_name,pix_fmt,width,height,nb_read_frames,r_frame_rate,avg_frame_rate,"
                               "color_space,color_range:format=format_name,duration -of json " +
                               shell_quote(path));
  EXPECT_TRUE(out.has_value()) << "ffprobe failed on " << path;
  return out ? nlohmann::json::parse(*out) : nlohmann::json::object();
}

// Top-level MP4 box types in file order.
std::vector<std::string> top_level_boxes(const std::vector<uint8_t>& bytes) {
  std::vector<std::string> types;
  size_t pos = 0;
  while (pos + 8 <= bytes.size()) {
    uint64_t size = (uint64_t{bytes[pos]} << 24) | (bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3];
    types.emplace_back(reinterpret_cast<const char*>(&bytes[pos + 4]), 4);
    if (size == 1 && pos + 16 <= bytes.size()) {  // 64-bit size follows the type
      size = 0;
      for (int i = 0; i < 8; ++i) size = (size << 8) | bytes[pos + 8 + i];
    }
    if (size < 8) break;
    pos += size;
  }
  return types;
}

// Decoded RGB frames (ffmpeg converts back with the matrix the stream is tagged with).
std::vector<uint8_t> decode_rgb(const std::string& path) {
  const auto out = run_command("ffmpeg -v error -i " + shell_quote(path) + " -f rawvideo -pix_fmt rgb24 -");
  EXPECT_TRUE(out.has_value()) << "ffmpeg could not decode " << path;
  return out ? std::vector<uint8_t>(out->begin(), out->end()) : std::vector<uint8_t>{};
}

double mean_abs_diff(const std::vector<uint8_t>& a, const Tensor& b) {
  EXPECT_EQ(a.size(), static_cast<size_t>(b.numel()));
  const uint8_t* p = b.data<uint8_t>();
  double sum = 0;
  for (size_t i = 0; i < a.size() && i < static_cast<size_t>(b.numel()); ++i) sum += std::abs(int(a[i]) - int(p[i]));
  return sum / static_cast<double>(a.size());
}

// The tools that check the files, and something to write them with.
#define REQUIRE_FFMPEG_TOOLS()                                                                     \
  if (!vgen::testing::have_program("ffprobe") || !vgen::testing::have_program("ffmpeg"))          \
    GTEST_SKIP() << "ffprobe/ffmpeg not installed";                                                 \
  if (const std::string why = mp4_writer_problem(); !why.empty()) GTEST_SKIP() << why

}  // namespace

namespace {

// `path` holds `frames` (48x32 at 16 fps) as H.264 yuv420p, BT.709 limited range, faststart.
void expect_faithful_h264(const std::string& path, const Tensor& frames) {
  const nlohmann::json info = probe(path);
  const nlohmann::json& stream = info["streams"][0];
  EXPECT_EQ(stream["codec_name"], "h264");
  EXPECT_EQ(stream["pix_fmt"], "yuv420p");
  EXPECT_EQ(stream["width"], 48);
  EXPECT_EQ(stream["height"], 32);
  EXPECT_EQ(stream["nb_read_frames"], std::to_string(frames.size(0)));
  EXPECT_EQ(stream["r_frame_rate"], "16/1");
  EXPECT_EQ(stream["avg_frame_rate"], "16/1");
  EXPECT_EQ(stream["color_space"], "bt709");
  EXPECT_EQ(stream["color_range"], "tv");
  EXPECT_NE(info["format"]["format_name"].get<std::string>().find("mp4"), std::string::npos);
  EXPECT_NEAR(std::stod(info["format"]["duration"].get<std::string>()), frames.size(0) / 16.0, 1e-3);

  // +faststart: the moov box comes before the media data.
  const std::vector<std::string> boxes = top_level_boxes(read_file(path));
  const auto moov = std::find(boxes.begin(), boxes.end(), "moov");
  const auto mdat = std::find(boxes.begin(), boxes.end(), "mdat");
  ASSERT_NE(moov, boxes.end());
  ASSERT_NE(mdat, boxes.end());
  EXPECT_LT(moov - boxes.begin(), mdat - boxes.begin()) << "moov after mdat: faststart missing";

  // crf 18 keeps the picture: 4:2:0 chroma of this small clip with a fast-changing blue
  // channel costs about 2 levels on average (the ffmpeg tool's own rgb24 -> libx264 crf 18
  // encode of it measures the same); a wrong matrix, range or frame order costs tens.
  const double error = mean_abs_diff(decode_rgb(path), frames);
  EXPECT_LT(error, 3.0) << "mean |decoded - original| = " << error;
}

}  // namespace

TEST(Mp4, WritesH264Yuv420pWithFaststart) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_basic");
  const std::string path = dir + "/gradient.mp4";
  const Tensor frames = moving_gradient(17, 32, 48);
  write_mp4(path, frames, {.fps = 16});
  expect_faithful_h264(path, frames);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"gradient.mp4"}) << "temporary file left behind";
}

// Builds without FFmpeg's libraries pipe the frames through an ffmpeg program: the same file.
TEST(Mp4, ThroughTheFfmpegProgramTheSameStream) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_program_ok");
  const Tensor frames = moving_gradient(17, 32, 48);
  write_mp4_through_program("ffmpeg", dir + "/gradient.mp4", frames, {.fps = 16});
  expect_faithful_h264(dir + "/gradient.mp4", frames);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"gradient.mp4"}) << "temporary file left behind";
}

// An encoder program that is missing, quits without reading the frames, is killed or fails: an
// error naming it and what happened, and no file. The process lives on: a write into a pipe
// whose reader has gone raises SIGPIPE, which would end it (and a server with it).
TEST(Mp4, AFailingEncoderProgramIsAnErrorNotASignal) {
  const std::string bin = fresh_dir("mp4_program_bin"), dir = fresh_dir("mp4_program_err");
  const auto script = [&](const std::string& name, const std::string& body) {
    const std::string path = bin + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  };
  // 786 KB of frames, more than a pipe holds: the write itself meets the closed pipe.
  const Tensor frames = moving_gradient(64, 64, 64);
  const auto expect_error = [&](const std::string& program, const std::vector<std::string>& needles) {
    try {
      write_mp4_through_program(program, dir + "/out.mp4", frames, {.fps = 16});
      ADD_FAILURE() << program << ": no error";
    } catch (const Error& e) {
      for (const std::string& needle : needles)
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "no '" << needle << "' in: " << e.what();
    }
  };
  expect_error("/no/such/ffmpeg", {"writing MP4 '" + dir + "/out.mp4'", "no program '/no/such/ffmpeg' found"});
  expect_error("vgen-no-such-ffmpeg", {"no program 'vgen-no-such-ffmpeg' found"});
  expect_error(script("quits.sh", "exit 3"), {"quits.sh' failed (exit status 3, it took ", "of the 786432 bytes of frames"});
  expect_error(script("killed.sh", "kill -9 $$"), {"killed.sh' failed (", "killed by signal 9"});
  expect_error(script("fails.sh", "cat > /dev/null; exit 1"), {"fails.sh' failed (exit status 1)"});
  const std::string not_executable = bin + "/plain";
  std::ofstream(not_executable) << "ffmpeg\n";
  expect_error(not_executable, {"no program '" + not_executable + "' found"});
  EXPECT_TRUE(listing(dir).empty()) << "a file left behind";
}

// Whether this build can write MP4s, said before any work (the CLI checks it with --output
// *.mp4, the server before it queues a video).
TEST(Mp4, SaysWhenItCannotWriteMp4s) {
#ifdef VGEN_WITH_LIBAV
  EXPECT_EQ(mp4_writer_problem(), "");
#else
  const char* old = std::getenv("VGEN_FFMPEG");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("VGEN_FFMPEG", "/no/such/ffmpeg", 1);
  const std::string why = mp4_writer_problem();
  if (old != nullptr) ::setenv("VGEN_FFMPEG", saved.c_str(), 1);
  else ::unsetenv("VGEN_FFMPEG");
  EXPECT_NE(why.find("no program '/no/such/ffmpeg' found"), std::string::npos) << why;
  EXPECT_NE(why.find("VGEN_FFMPEG"), std::string::npos) << why;
#endif
}

TEST(Mp4, FrameRatesIncludingNonInteger) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_rates");
  const Tensor frames = moving_gradient(24, 32, 48);
  struct Case {
    double fps;
    const char* rate;
  };
  for (const Case& c : {Case{24, "24/1"}, Case{30000.0 / 1001.0, "30000/1001"}, Case{23.976, "2997/125"},
                        Case{12.5, "25/2"}}) {
    const std::string path = dir + "/rate.mp4";
    write_mp4(path, frames, {.fps = c.fps, .crf = 23, .preset = "veryfast"});
    const nlohmann::json stream = probe(path)["streams"][0];
    EXPECT_EQ(stream["nb_read_frames"], "24") << c.fps;
    EXPECT_EQ(stream["r_frame_rate"], c.rate) << c.fps;
    EXPECT_EQ(stream["avg_frame_rate"], c.rate) << c.fps;
  }
}

TEST(Mp4, EncodeToBytesMatchesFile) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_bytes");
  const Tensor frames = moving_gradient(5, 16, 16);
  const VideoEncodeOptions options{.fps = 8, .crf = 20, .preset = "fast"};
  const std::vector<uint8_t> bytes = encode_mp4(frames, options);
  write_mp4(dir + "/a.mp4", frames, options);
  // libx264 is deterministic for identical input and settings.
  EXPECT_EQ(bytes, read_file(dir + "/a.mp4"));
  std::ofstream(dir + "/b.mp4", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  EXPECT_EQ(probe(dir + "/b.mp4")["streams"][0]["nb_read_frames"], "5");
}

// The path a generation takes: diffusers' VAE output [1, 3, 9, 32, 48] -> uint8 frames -> MP4.
TEST(Mp4, FromVaeOutput) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_vae");
  const Tensor video = vgen::testing::reference("wan21_t2v_tiny_ref/vae.safetensors").get("video");
  const Tensor frames = video_to_uint8_frames(video);
  write_mp4(dir + "/wan.mp4", frames, {.fps = 16});
  const nlohmann::json stream = probe(dir + "/wan.mp4")["streams"][0];
  EXPECT_EQ(stream["nb_read_frames"], std::to_string(video.size(2)));
  EXPECT_EQ(stream["width"], video.size(4));
  EXPECT_EQ(stream["height"], video.size(3));
}

TEST(Mp4, SingleFrameAndStridedInput) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_strided");
  // Frames taken from a [H, W, F, 3] layout: a non-contiguous view.
  const Tensor frames = moving_gradient(3, 16, 24).permute({1, 2, 0, 3}).contiguous().permute({2, 0, 1, 3});
  ASSERT_FALSE(frames.is_contiguous());
  write_mp4(dir + "/v.mp4", frames, {.fps = 16});
  EXPECT_EQ(probe(dir + "/v.mp4")["streams"][0]["nb_read_frames"], "3");
  EXPECT_EQ(read_file(dir + "/v.mp4"), encode_mp4(frames.contiguous(), {.fps = 16}));
  write_mp4(dir + "/one.mp4", frames.narrow(0, 1, 1), {.fps = 16});
  EXPECT_EQ(probe(dir + "/one.mp4")["streams"][0]["nb_read_frames"], "1");
}

namespace {

// Runs write_mp4 expecting an Error that contains `needle`.
void expect_mp4_error(const std::string& path, const Tensor& frames, const VideoEncodeOptions& options,
                      const std::string& needle) {
  try {
    write_mp4(path, frames, options);
    ADD_FAILURE() << "no error, expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Mp4, ErrorsNameTheProblemAndLeaveNoFiles) {
  const std::string dir = fresh_dir("mp4_errors");
  const std::string path = dir + "/out.mp4";
  expect_mp4_error(path, moving_gradient(2, 32, 47), {.fps = 16}, "even width and height, got 47x32");
  expect_mp4_error(path, moving_gradient(2, 31, 48), {.fps = 16}, "got 48x31");
  expect_mp4_error(path, Tensor::zeros({2, 32, 48, 3}), {.fps = 16}, "U8 [F, H, W, 3]");
  expect_mp4_error(path, Tensor::zeros({2, 32, 48, 4}, DType::U8), {.fps = 16}, "U8[2, 32, 48, 4]");
  expect_mp4_error(path, Tensor::zeros({32, 48, 3}, DType::U8), {.fps = 16}, "U8 [F, H, W, 3]");
  expect_mp4_error(path, moving_gradient(2, 32, 48), {.fps = 0}, "fps must be positive");
  expect_mp4_error(path, moving_gradient(2, 32, 48), {}, "fps must be positive");  // no default rate
  expect_mp4_error(path, moving_gradient(2, 32, 48), {.fps = 16, .crf = 60}, "crf must be in 0..51");
  expect_mp4_error(path, moving_gradient(2, 32, 48), {.fps = 16, .preset = "turbo"}, "unknown libx264 preset 'turbo'");
  EXPECT_TRUE(listing(dir).empty());

  // Directory missing: the temporary file cannot even be created.
  expect_mp4_error(dir + "/missing/out.mp4", moving_gradient(2, 32, 48), {.fps = 16}, "missing/out.mp4.tmp");
  // The destination is a directory: encoding succeeds, the rename fails, the temp file goes.
  if (const std::string why = mp4_writer_problem(); !why.empty()) GTEST_SKIP() << why;
  fs::create_directories(dir + "/taken.mp4");
  fs::create_directories(dir + "/taken.mp4/child");
  expect_mp4_error(dir + "/taken.mp4", moving_gradient(2, 32, 48), {.fps = 16}, "cannot rename");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"taken.mp4"}) << "temporary file left behind";
}

TEST(Mp4, ExistingFileIsReplacedAtomically) {
  REQUIRE_FFMPEG_TOOLS();
  const std::string dir = fresh_dir("mp4_replace");
  const std::string path = dir + "/clip.mp4";
  std::ofstream(path) << "old contents";
  // A failing write keeps the old file untouched.
  EXPECT_THROW(write_mp4(path, moving_gradient(2, 32, 47), {.fps = 16}), Error);
  std::ifstream in(path);
  std::string old((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(old, "old contents");
  write_mp4(path, moving_gradient(4, 32, 48), {.fps = 16});
  EXPECT_EQ(probe(path)["streams"][0]["nb_read_frames"], "4");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"clip.mp4"});
}
