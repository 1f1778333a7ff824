// Where `vgen generate` writes, decided and checked before any work: a missing or read-only
// folder is reported at once, naming the path the user gave, not after the generation.
#pragma once

#include <string>

namespace vgen::cli {

enum class OutputKind { Mp4, Image };

struct OutputTarget {
  OutputKind kind = OutputKind::Mp4;
  std::string path;  // as the user gave it
};

// From --output: ".mp4" -> MP4; ".png"/".jpg"/".jpeg"/".webp" -> an image. Throws vgen::Error
// naming --output and `path` when the extension is unknown or its folder is missing, not a
// folder or not writable.
OutputTarget plan_output(const std::string& path);

}  // namespace vgen::cli
