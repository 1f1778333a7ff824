// `vgen generate --batch-size auto`: how many videos go through the transformer together,
// from the device memory left and what one video was measured to need.
#pragma once

#include <cstddef>
#include <optional>

namespace vgen::cli {

// The batch for the `remaining` videos of a run, after a first video measured that one video
// needs `per_video_bytes` of device memory above the loaded model (its peak, VAE decode
// included, so an over-estimate for the batched transformer). `available_bytes`: what the
// device can still give (nullopt: unknown, e.g. the CPU, where batching gains nothing: 1).
// Keeps `headroom` (a fraction) of it free; at least 1, at most min(remaining, max_batch).
int auto_batch_size(int remaining, std::optional<size_t> available_bytes, size_t per_video_bytes,
                    int max_batch = 64, double headroom = 0.1);

}  // namespace vgen::cli
