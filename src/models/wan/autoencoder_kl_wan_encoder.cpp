#include "models/wan/autoencoder_kl_wan_encoder.h"

#include <type_traits>

#include "ops/ops.h"

namespace vgen {

WanResidualDownBlock::WanResidualDownBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim,
                                           int64_t out_dim, int64_t num_res_blocks, bool temperal_downsample,
                                           bool down_flag)
    : avg_shortcut_(load, in_dim, out_dim, temperal_downsample ? 2 : 1, down_flag ? 2 : 1) {
  for (int64_t i = 0; i < num_res_blocks; ++i)
    resnets_.emplace_back(load, fmt::format("{}.resnets.{}", prefix, i), i == 0 ? in_dim : out_dim, out_dim);
  if (down_flag)
    downsampler_.emplace(load, prefix + ".downsampler", out_dim,
                         temperal_downsample ? WanResampleMode::Downsample3d : WanResampleMode::Downsample2d, out_dim);
}

Tensor WanResidualDownBlock::forward(Tensor x, nn::FeatCache& cache) const {
  // Ops never write their inputs, so holding x is diffusers' x.clone().
  const Tensor input = x;
  for (const WanResidualBlock& resnet : resnets_) x = resnet.forward(std::move(x), cache);
  if (downsampler_) x = downsampler_->forward(std::move(x), cache, /*first_chunk=*/false);
  return ops::add(x, avg_shortcut_.forward(input));
}

WanEncoder3d::WanEncoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config)
    : WanEncoder3d(load, config, config.encoder_dims()) {}

WanEncoder3d::WanEncoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config,
                           const std::vector<int64_t>& dims)
    : conv_in_(load.causal_conv("encoder.conv_in", config.in_channels, dims[0], {3, 3, 3}, {1, 1, 1})),
      mid_block_(load, "encoder.mid_block", dims.back()),
      norm_out_(load.weights, "encoder.norm_out", dims.back()),
      conv_out_(load.causal_conv("encoder.conv_out", dims.back(), 2 * config.z_dim, {3, 3, 3}, {1, 1, 1})) {
  // attn_scales is refused for the Wan2.1 encoder by AutoencoderKLWan (diffusers cannot run it).
  const size_t levels = config.dim_mult.size();
  for (size_t i = 0; i < levels; ++i) {
    const bool down_flag = i != levels - 1;
    const bool temporal = down_flag && config.temperal_downsample[i];
    if (config.is_residual) {
      down_blocks_.emplace_back(std::in_place_type<WanResidualDownBlock>, load,
                                fmt::format("encoder.down_blocks.{}", i), dims[i], dims[i + 1], config.num_res_blocks,
                                temporal, down_flag);
      continue;
    }
    for (int64_t j = 0; j < config.num_res_blocks; ++j) {
      down_blocks_.emplace_back(std::in_place_type<WanResidualBlock>, load,
                                fmt::format("encoder.down_blocks.{}", down_blocks_.size()),
                                j == 0 ? dims[i] : dims[i + 1], dims[i + 1]);
    }
    if (down_flag) {
      down_blocks_.emplace_back(std::in_place_type<WanResample>, load,
                                fmt::format("encoder.down_blocks.{}", down_blocks_.size()), dims[i + 1],
                                temporal ? WanResampleMode::Downsample3d : WanResampleMode::Downsample2d, dims[i + 1]);
    }
  }
}

Tensor WanEncoder3d::forward(Tensor x, nn::FeatCache& cache) const {
  x = conv_in_.forward(x, &cache);
  for (const DownBlock& block : down_blocks_) {
    x = std::visit(
        [&](const auto& b) {
          if constexpr (std::is_same_v<std::decay_t<decltype(b)>, WanResample>)
            return b.forward(std::move(x), cache, /*first_chunk=*/false);
          else
            return b.forward(std::move(x), cache);
        },
        block);
  }
  x = mid_block_.forward(std::move(x), cache);
  return conv_out_.forward(
      x, [&](const Tensor& out, const Tensor& tail) { norm_out_.forward(x, Activation::Silu, out, tail); }, &cache);
}

}  // namespace vgen
