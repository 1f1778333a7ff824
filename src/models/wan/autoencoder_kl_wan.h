// AutoencoderKLWan (diffusers' autoencoder_kl_wan.py), the Wan2.1 video VAE: the decode
// path only (post_quant_conv + WanDecoder3d), one latent frame at a time with the causal
// per-conv feature cache, exactly as diffusers' _decode.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"

namespace vgen {

// Fields named as in the VAE's config.json; defaults are diffusers' (register_to_config).
struct AutoencoderKLWanConfig {
  int64_t base_dim = 96;
  std::optional<int64_t> decoder_base_dim;  // the decoder's width when it differs from base_dim
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<double> attn_scales;  // encoder only
  std::vector<bool> temperal_downsample{false, true, true};  // the decoder upsamples in reverse order
  double dropout = 0.0;  // inference: no effect
  std::vector<float> latents_mean;
  std::vector<float> latents_std;
  bool is_residual = false;  // Wan2.2's residual VAE: not supported
  int64_t in_channels = 3;   // encoder only
  int64_t out_channels = 3;
  std::optional<int64_t> patch_size;  // Wan2.2 (un)patchify: only null or 1 supported
  int64_t scale_factor_temporal = 4;
  int64_t scale_factor_spatial = 8;

  // Reads and checks a config.json (`path` names it in errors), failing on fields that ask
  // for a feature this decoder does not implement.
  static AutoencoderKLWanConfig from_json(const Json& j, const std::string& path);

  int64_t decoder_dim() const { return decoder_base_dim.value_or(base_dim); }
  // Output frames per latent frame after the first: 2 per temporal upsample (4 for Wan2.1).
  int64_t frames_per_latent() const;
};

class AutoencoderKLWan {
 public:
  // Reads `dir/config.json` and the decoder's weights (post_quant_conv.*, decoder.*) from
  // `dir`, converted to `dtype` on `device`. encoder.* and quant_conv.* are not loaded.
  static std::unique_ptr<AutoencoderKLWan> from_pretrained(const std::string& dir, DType dtype, Device device);
  ~AutoencoderKLWan();

  const AutoencoderKLWanConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }

  // z [B, z_dim, T, h, w], already de-normalized (latents * std + mean) ->
  // video [B, out_channels, 1 + 4(T-1), 8h, 8w] clamped to [-1, 1], in the model's dtype.
  Tensor decode(const Tensor& z) const;

 private:
  struct Modules;  // post_quant_conv + WanDecoder3d, defined in the .cpp

  AutoencoderKLWan();

  AutoencoderKLWanConfig config_;
  std::string dir_;
  DType dtype_ = DType::F32;
  Device device_;
  std::unique_ptr<Modules> modules_;
};

}  // namespace vgen
