#include "pipelines/flux/pipeline_flux_latents.h"

#include <cmath>

#include "core/error.h"

namespace vgen {

double flux_calculate_shift(int64_t image_seq_len, double base_seq_len, double max_seq_len, double base_shift,
                            double max_shift) {
  const double m = (max_shift - base_shift) / (max_seq_len - base_seq_len);
  const double b = base_shift - m * base_seq_len;
  return static_cast<double>(image_seq_len) * m + b;
}

Tensor flux_pack_latents(const Tensor& latents) {
  VGEN_CHECK(latents.dim() == 4 && latents.size(2) % 2 == 0 && latents.size(3) % 2 == 0,
             "flux_pack_latents: latents {} must be [batch, channels, even height, even width]", latents.str());
  const int64_t B = latents.size(0), C = latents.size(1), H = latents.size(2), W = latents.size(3);
  return latents.contiguous()
      .view({B, C, H / 2, 2, W / 2, 2})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({B, (H / 2) * (W / 2), C * 4});
}

Tensor flux_unpack_latents(const Tensor& packed, int64_t height, int64_t width) {
  VGEN_CHECK(packed.dim() == 3 && packed.size(1) == (height / 2) * (width / 2) && packed.size(2) % 4 == 0,
             "flux_unpack_latents: {} is not the packing of a {}x{} latent grid", packed.str(), height, width);
  const int64_t B = packed.size(0), C = packed.size(2) / 4;
  return packed.contiguous()
      .view({B, height / 2, width / 2, C, 2, 2})
      .permute({0, 3, 1, 4, 2, 5})
      .reshape({B, C, height, width});
}

Tensor flux_latent_image_ids(int64_t height, int64_t width, float first_axis) {
  std::vector<float> ids(static_cast<size_t>(height * width * 3));
  for (int64_t r = 0; r < height; ++r)
    for (int64_t c = 0; c < width; ++c) {
      float* row = ids.data() + (r * width + c) * 3;
      row[0] = first_axis;
      row[1] = static_cast<float>(r);
      row[2] = static_cast<float>(c);
    }
  return Tensor::from_vector(ids, {height * width, 3});
}

const std::vector<std::pair<int64_t, int64_t>>& kontext_preferred_resolutions() {
  // (width, height), as diffusers lists them.
  static const std::vector<std::pair<int64_t, int64_t>> r = {
      {672, 1568}, {688, 1504}, {720, 1456}, {752, 1392},  {800, 1328},  {832, 1248},
      {880, 1184}, {944, 1104}, {1024, 1024}, {1104, 944}, {1184, 880},  {1248, 832},
      {1328, 800}, {1392, 752}, {1456, 720},  {1504, 688}, {1568, 672}};
  return r;
}

std::pair<int64_t, int64_t> kontext_image_size(int64_t image_width, int64_t image_height, int64_t multiple_of) {
  // min((abs(aspect_ratio - w / h), w, h) ...): ties go to the smaller w, then h (tuple order).
  const double aspect = static_cast<double>(image_width) / static_cast<double>(image_height);
  double best_d = 0.0;
  int64_t best_w = 0, best_h = 0;
  bool first = true;
  for (const auto& [w, h] : kontext_preferred_resolutions()) {
    const double d = std::fabs(aspect - static_cast<double>(w) / static_cast<double>(h));
    if (first || d < best_d || (d == best_d && (w < best_w || (w == best_w && h < best_h)))) {
      best_d = d;
      best_w = w;
      best_h = h;
      first = false;
    }
  }
  return {best_w / multiple_of * multiple_of, best_h / multiple_of * multiple_of};
}

}  // namespace vgen
