// H.264 MP4 output (libx264 through libavcodec), what diffusers' export_to_video produces
// through imageio-ffmpeg, made ready for HTTP serving (moov atom in front).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "media/metadata.h"

namespace vgen::media {

struct VideoEncodeOptions {
  double fps = 0;                  // required: the pipeline's (capabilities().default_fps) or the
                                   // caller's; any positive rate (23.976, 30000/1001-style stay exact)
  int crf = 18;                    // libx264 constant rate factor: 0 (lossless) .. 51; 18 is visually lossless
  std::string preset = "medium";  // libx264 preset: ultrafast .. placebo
  // Written as MP4 metadata tags (movflags use_metadata_tags: any key, read back by
  // read_video_metadata, shown by ffprobe).
  Metadata metadata;
};

// frames: U8 [F, H, W, 3] RGB (as video_to_uint8_frames gives); H and W even (yuv420p).
// Encodes into a temporary file beside `path` and renames it into place on success; on
// failure nothing is left behind and vgen::Error carries libav's message.
void write_mp4(const std::string& path, const Tensor& frames, const VideoEncodeOptions& options);

// The same MP4 as bytes (for responses), encoded through a temporary file.
std::vector<uint8_t> encode_mp4(const Tensor& frames, const VideoEncodeOptions& options);

// Why this build cannot write MP4s, or "" when it can: a build without FFmpeg's libraries
// encodes through an ffmpeg program ($VGEN_FFMPEG, else the one on PATH), and says so here when
// there is none. Callers check it before any work (the CLI, with --output *.mp4).
std::string mp4_writer_problem();

// The same MP4 through the ffmpeg program `program` (a path, or a name looked up on PATH), fed
// raw RGB frames on its standard input: what a build without FFmpeg's libraries does. A program
// that is missing, stops reading or fails is an error naming it; nothing is left behind.
void write_mp4_through_program(const std::string& program, const std::string& path, const Tensor& frames,
                               const VideoEncodeOptions& options);

}  // namespace vgen::media
