// VAE output -> displayable frames, exactly as diffusers' VideoProcessor.postprocess_video.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace vgen::media {

// How [0, 1] floats become uint8 levels. diffusers has both:
//  - Round: VaeImageProcessor.numpy_to_pil, `(x * 255).round().astype("uint8")` (numpy rounds
//    half to even); what output_type="pil" gives and what saving those PIL frames writes.
//  - Truncate: export_to_video on output_type="np" frames, `(x * 255).astype(np.uint8)`.
// vgen defaults to Round: it is the nearest level, and it is what diffusers' own image and
// PIL-frame outputs hold. Truncate reproduces export_to_video byte for byte.
enum class Quantization { Round, Truncate };

// video: [B, 3, F, H, W] in [-1, 1] (any float dtype, any device); takes batch `batch_index`.
// Returns CPU F32 [F, H, W, 3] = (x * 0.5 + 0.5).clamp(0, 1), what output_type="np" gives.
// For a BF16/F16 video the denormalization is rounded to that dtype before the clamp, as
// torch does when the VAE runs in reduced precision.
Tensor video_to_float_frames(const Tensor& video, int64_t batch_index = 0);

// The same frames as CPU U8 [F, H, W, 3], RGB, ready for write_mp4 / encode_image.
// NaN becomes 0.
Tensor video_to_uint8_frames(const Tensor& video, int64_t batch_index = 0,
                             Quantization quantization = Quantization::Round);

}  // namespace vgen::media
