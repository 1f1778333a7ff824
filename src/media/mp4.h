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

}  // namespace vgen::media
