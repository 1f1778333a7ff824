// FLUX.1 pipelines' latent bookkeeping (diffusers' pipeline_flux.py / pipeline_flux_kontext.py
// static helpers): 2x2 packing, the RoPE ids of the latent grid, the resolution-dependent
// schedule shift mu, and Kontext's preferred input resolutions.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace vgen {

// calculate_shift: mu linear in the image token count between (base_seq_len, base_shift) and
// (max_seq_len, max_shift).
double flux_calculate_shift(int64_t image_seq_len, double base_seq_len, double max_seq_len, double base_shift,
                            double max_shift);

// _pack_latents: [B, C, H, W] -> [B, (H/2)(W/2), 4C]; _unpack_latents: back, height/width the latent grid.
Tensor flux_pack_latents(const Tensor& latents);
Tensor flux_unpack_latents(const Tensor& packed, int64_t height, int64_t width);
// _prepare_latent_image_ids: [height * width, 3] float32 rows (first_axis, row, col) on the CPU
// (Kontext's reference image tokens have first_axis 1).
Tensor flux_latent_image_ids(int64_t height, int64_t width, float first_axis = 0.0f);

// FluxKontextPipeline's PREFERRED_KONTEXT_RESOLUTIONS as (width, height), and _auto_resize's
// choice for an image: the entry whose aspect ratio is nearest (ties: the smaller width), each
// side rounded down to `multiple_of` -> (width, height).
const std::vector<std::pair<int64_t, int64_t>>& kontext_preferred_resolutions();
std::pair<int64_t, int64_t> kontext_image_size(int64_t image_width, int64_t image_height, int64_t multiple_of);

}  // namespace vgen
