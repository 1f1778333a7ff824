// diffusers: VideoProcessor.postprocess_video -> VaeImageProcessor.postprocess
// (denormalize = (x * 0.5 + 0.5).clamp(0, 1), then .float().numpy()) -> numpy_to_pil.
#include "media/frames.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vgen::media {
namespace {

// Channel planes [3, F, H, W] of one batch entry as contiguous CPU F32.
Tensor select_planes(const Tensor& video, int64_t batch_index) {
  VGEN_CHECK(video.defined(), "video frames: undefined video tensor");
  VGEN_CHECK(video.dim() == 5 && video.size(1) == 3, "video frames: expected a [B, 3, F, H, W] video, got {}",
             video.str());
  const DType dtype = video.dtype();
  VGEN_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16,
             "video frames: expected an F32, BF16 or F16 video, got {}", video.str());
  VGEN_CHECK(batch_index >= 0 && batch_index < video.size(0), "video frames: batch_index {} out of range for {}",
             batch_index, video.str());
  return video.select(0, batch_index).to(Device::cpu()).contiguous().to(DType::F32);
}

// torch computes reduced-precision elementwise ops in float and rounds each result to the
// tensor's dtype; x * 0.5 is exact, so only the sum is rounded.
float denormalize(float x, DType dtype) {
  float y = x * 0.5f + 0.5f;
  if (dtype == DType::BF16) y = bf16_to_float(float_to_bf16(y));
  if (dtype == DType::F16) y = f16_to_float(float_to_f16(y));
  return std::clamp(y, 0.0f, 1.0f);  // NaN passes through, as in torch.clamp
}

// Planar [3, F, H, W] -> interleaved [F, H, W, 3], value by value through `convert`.
template <typename T, typename Convert>
Tensor interleave(const Tensor& video, int64_t batch_index, DType out_dtype, Convert convert) {
  const Tensor planes = select_planes(video, batch_index);
  const int64_t pixels = planes.numel() / 3;
  Tensor out = Tensor::empty({planes.size(1), planes.size(2), planes.size(3), 3}, out_dtype);
  const float* src = planes.data<float>();
  T* dst = out.data<T>();
  const DType dtype = video.dtype();
#pragma omp parallel for
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < 3; ++c) dst[p * 3 + c] = convert(denormalize(src[c * pixels + p], dtype));
  return out;
}

}  // namespace

Tensor video_to_float_frames(const Tensor& video, int64_t batch_index) {
  return interleave<float>(video, batch_index, DType::F32, [](float y) { return y; });
}

Tensor video_to_uint8_frames(const Tensor& video, int64_t batch_index, Quantization quantization) {
  const bool round = quantization == Quantization::Round;
  return interleave<uint8_t>(video, batch_index, DType::U8, [round](float y) -> uint8_t {
    // numpy multiplies the float32 array by 255 in float32.
    const float v = y * 255.0f;
    if (std::isnan(v)) return 0;
    // nearbyint rounds half to even in the default rounding mode, like numpy's round.
    return static_cast<uint8_t>(round ? std::nearbyint(v) : v);
  });
}

}  // namespace vgen::media
