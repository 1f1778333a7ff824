// Where `vgen generate` writes, decided and checked before any work: a missing or read-only
// folder is reported at once, naming the path the user gave, not after the generation.
#pragma once

#include <cstdint>
#include <string>

namespace vgen::cli {

enum class OutputKind {
  Mp4,            // H.264 (lossy; --crf, --preset)
  Image,          // one .png/.jpg/.webp (1 frame)
  FrameSequence,  // lossless PNGs: DIR/0000.png ... or a printf pattern such as f_%04d.png
};

struct OutputTarget {
  OutputKind kind = OutputKind::Mp4;
  std::string path;     // as the user gave it
  std::string pattern;  // FrameSequence: one %d-style field for the frame index (from 0)
  bool folder = false;  // FrameSequence given as a folder (DIR/%04d.png)
};

// From --output: ".mp4" -> MP4; ".png"/".jpg"/".jpeg"/".webp" -> an image; a folder (ending in
// '/', or one that exists) -> DIR/%04d.png; a ".png" name with one %d / %0Nd field -> that
// pattern. Throws vgen::Error naming --output and `path` when the extension is unknown, the
// pattern malformed, or the folder missing (a sequence's own folder may be created: its parent
// must exist), not a folder or not writable.
OutputTarget plan_output(const std::string& path);
// Creates a FrameSequence's folder when missing (after plan_output, once there is something to write).
void prepare_output(const OutputTarget& target);
// Where video `index` of `count` goes: the target itself when count is 1; else out.mp4 ->
// out_000.mp4, frames/ -> frames/000/%04d.png, frames/f_%04d.png -> frames/000_f_%04d.png.
OutputTarget output_for_video(const OutputTarget& target, int index, int count);
// The file of frame `index` of a FrameSequence.
std::string frame_path(const OutputTarget& target, int64_t index);

}  // namespace vgen::cli
