// The blocks of AutoencoderKLWan's decoder, named as diffusers' autoencoder_kl_wan.py:
// WanResidualBlock, WanAttentionBlock, WanResample (upsampling modes), WanUpBlock,
// WanDecoder3d (Wan2.1: is_residual false). Built from nn modules; each chunk (one latent
// frame) goes through with the causal convs' feature cache, as diffusers' _decode.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "models/wan/autoencoder_kl_wan.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen {

// How the decoder's modules are built: the checkpoint, and whether activations run
// channels-last (filters are stored to match).
struct WanVaeLoad {
  const nn::Weights& weights;
  bool channels_last;
  nn::FeatCacheSlots& slots;

  nn::CausalConv3d causal_conv(const std::string& prefix, int64_t in, int64_t out, std::array<int64_t, 3> kernel,
                               std::array<int64_t, 3> padding) const {
    return nn::CausalConv3d(weights, prefix, in, out, kernel, padding, channels_last, slots);
  }
};

class WanResidualBlock {
 public:
  WanResidualBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim);
  Tensor forward(Tensor x, nn::FeatCache& cache) const;

 private:
  nn::ChannelRMSNorm norm1_;
  nn::CausalConv3d conv1_;
  nn::ChannelRMSNorm norm2_;
  nn::CausalConv3d conv2_;
  std::optional<nn::CausalConv3d> conv_shortcut_;  // when in_dim != out_dim
};

// Single-head self-attention over the h*w positions of each frame; to_qkv and proj are 1x1
// convolutions, applied as linears over the channels.
class WanAttentionBlock {
 public:
  WanAttentionBlock(const WanVaeLoad& load, const std::string& prefix, int64_t dim);
  Tensor forward(const Tensor& x) const;

 private:
  int64_t dim_;
  nn::ChannelRMSNorm norm_;
  nn::Linear to_qkv_, proj_;
};

// WanResample in "upsample2d" / "upsample3d" mode: (time_conv doubling the frames), then per
// frame nearest 2x upsampling and a 3x3 conv to dim/2 channels.
class WanResample {
 public:
  WanResample(const WanVaeLoad& load, const std::string& prefix, int64_t dim, bool upsample3d);
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

 private:
  nn::Conv3d resample_;  // resample.1, a Conv2d per frame
  std::optional<nn::CausalConv3d> time_conv_;
};

// num_res_blocks + 1 residual blocks, then an optional upsampler.
class WanUpBlock {
 public:
  // upsample3d: nullopt for no upsampler, else its mode.
  WanUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim,
             int64_t num_res_blocks, std::optional<bool> upsample3d);
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

 private:
  std::vector<WanResidualBlock> resnets_;
  std::optional<WanResample> upsampler_;
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
  WanResidualBlock mid_resnet0_;
  WanAttentionBlock mid_attention_;
  WanResidualBlock mid_resnet1_;
  std::vector<WanUpBlock> up_blocks_;
  nn::ChannelRMSNorm norm_out_;
  nn::CausalConv3d conv_out_;
};

}  // namespace vgen
