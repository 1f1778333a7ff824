// AutoencoderKLWan's decoder, named as diffusers' autoencoder_kl_wan.py: WanUpBlock (Wan2.1),
// WanResidualUpBlock (Wan2.2, is_residual) and WanDecoder3d. One latent frame per call, with
// the causal convs' feature cache, as diffusers' _decode.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "models/wan/autoencoder_kl_wan_blocks.h"

namespace vgen {

// num_res_blocks + 1 residual blocks, then an optional upsampler (to out_dim / 2 channels).
class WanUpBlock {
 public:
  WanUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim, int64_t num_res_blocks,
             std::optional<WanResampleMode> upsample_mode);
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

 private:
  std::vector<WanResidualBlock> resnets_;
  std::optional<WanResample> upsampler_;  // upsamplers.0
};

// Wan2.2: num_res_blocks + 1 residual blocks and an optional upsampler keeping out_dim
// channels, plus the DupUp3D shortcut of the block's input when it upsamples.
class WanResidualUpBlock {
 public:
  WanResidualUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim,
                     int64_t num_res_blocks, bool temperal_upsample, bool up_flag);
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

 private:
  std::optional<DupUp3D> avg_shortcut_;
  std::vector<WanResidualBlock> resnets_;
  std::optional<WanResample> upsampler_;  // upsampler
};

class WanDecoder3d {
 public:
  // The modules under `decoder.`.
  WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config);
  // One chunk (one latent frame) through the decoder, updating the feature cache.
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

 private:
  WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config, const std::vector<int64_t>& dims);

  nn::CausalConv3d conv_in_;
  WanMidBlock mid_block_;
  std::vector<std::variant<WanUpBlock, WanResidualUpBlock>> up_blocks_;
  nn::ChannelRMSNorm norm_out_;
  nn::CausalConv3d conv_out_;
};

}  // namespace vgen
