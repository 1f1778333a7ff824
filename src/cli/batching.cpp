#include "cli/batching.h"

#include <algorithm>
#include <cstdint>

namespace vgen::cli {

int auto_batch_size(int remaining, std::optional<size_t> available_bytes, size_t per_video_bytes, int max_batch,
                    double headroom) {
  const int cap = std::max(1, std::min(remaining, max_batch));
  if (!available_bytes || per_video_bytes == 0) return 1;
  // The video measured is freed again: the device can hold `fit` of them at once.
  const double usable = static_cast<double>(*available_bytes) * (1.0 - std::clamp(headroom, 0.0, 0.9));
  const double fit = usable / static_cast<double>(per_video_bytes);
  return static_cast<int>(std::clamp(fit, 1.0, static_cast<double>(cap)));
}

}  // namespace vgen::cli
