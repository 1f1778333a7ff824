// AutoencoderKLWan's encoder, named as diffusers' autoencoder_kl_wan.py: WanResidualDownBlock
// (Wan2.2, is_residual) and WanEncoder3d. One chunk of frames per call (the first frame, then
// 4 at a time), with the causal convs' feature cache, as diffusers' _encode.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "models/wan/autoencoder_kl_wan_blocks.h"

namespace vgen {

// Wan2.2: num_res_blocks residual blocks and an optional downsampler, plus the AvgDown3D
// shortcut of the block's input.
class WanResidualDownBlock {
 public:
  WanResidualDownBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim,
                       int64_t num_res_blocks, bool temperal_downsample, bool down_flag);
  Tensor forward(Tensor x, nn::FeatCache& cache) const;

 private:
  AvgDown3D avg_shortcut_;
  std::vector<WanResidualBlock> resnets_;
  std::optional<WanResample> downsampler_;
};

class WanEncoder3d {
 public:
  // The modules under `encoder.`; conv_out gives 2 * z_dim channels (mean and log-variance).
  WanEncoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config);
  // One chunk of frames through the encoder, updating the feature cache.
  Tensor forward(Tensor x, nn::FeatCache& cache) const;

 private:
  // diffusers' down_blocks: Wan2.1 lists residual blocks and resamplers flat, Wan2.2 has one
  // WanResidualDownBlock per level.
  using DownBlock = std::variant<WanResidualBlock, WanResample, WanResidualDownBlock>;

  WanEncoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config, const std::vector<int64_t>& dims);

  nn::CausalConv3d conv_in_;
  std::vector<DownBlock> down_blocks_;
  WanMidBlock mid_block_;
  nn::ChannelRMSNorm norm_out_;
  nn::CausalConv3d conv_out_;
};

}  // namespace vgen
