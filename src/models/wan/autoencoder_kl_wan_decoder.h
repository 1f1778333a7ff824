// AutoencoderKLWan's decoder, named as diffusers' autoencoder_kl_wan.py: WanUpBlock (Wan2.1),
// WanResidualUpBlock (Wan2.2, is_residual) and WanDecoder3d. diffusers' _decode runs one latent
// frame per call, with the causal convs' feature cache; here the decoder's head (up to the
// first upsampler) takes any number of latent frames per call and the rest one (head()).
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
  // The result's skip connection is left to its reader when no upsampler follows (WanSkipSum).
  WanSkipSum forward(WanSkipSum x, nn::FeatCache& cache, bool first_chunk) const;
  // forward() in two parts: the residual blocks, then the upsampler (`input`, the block's
  // input, is unused: Wan2.1 has no shortcut).
  WanSkipSum forward_resnets(WanSkipSum x, nn::FeatCache& cache) const;
  WanSkipSum forward_upsample(WanSkipSum x, const Tensor& input, nn::FeatCache& cache, bool first_chunk) const;
  bool has_shortcut() const { return false; }

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
  // The result's skip connection is left to its reader when no upsampler follows (WanSkipSum).
  WanSkipSum forward(WanSkipSum x, nn::FeatCache& cache, bool first_chunk) const;
  // forward() in two parts: the residual blocks, then the upsampler plus the shortcut of
  // `input` (the block's input).
  WanSkipSum forward_resnets(WanSkipSum x, nn::FeatCache& cache) const;
  WanSkipSum forward_upsample(WanSkipSum x, const Tensor& input, nn::FeatCache& cache, bool first_chunk) const;
  bool has_shortcut() const { return avg_shortcut_.has_value(); }

 private:
  std::optional<DupUp3D> avg_shortcut_;
  std::vector<WanResidualBlock> resnets_;
  std::optional<WanResample> upsampler_;  // upsampler
};

class WanDecoder3d {
 public:
  // The modules under `decoder.`.
  WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config);
  // One chunk (one latent frame) through the decoder, updating the feature cache:
  // tail(head(x)).
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const;

  // The head: conv_in, the mid block and the first up block's residual blocks. Each of its ops
  // is a causal conv (whose cache carries the frames before the chunk) or works per frame (the
  // channel norms, the mid block's attention), so its result for T latent frames at once is,
  // frame by frame, that of T one-frame calls: the decoder's 3x3x3 convolutions of the
  // smallest size run on T frames at once instead of one.
  struct Head {
    Tensor x;      // [B, C, T, h, w]: the first up block's residual blocks' output
    Tensor input;  // the first up block's input (the mid block's output) when its shortcut needs it
    // Latent frames [t, t + n).
    Head frames(int64_t t, int64_t n) const {
      return {x.narrow(2, t, n), input.defined() ? input.narrow(2, t, n) : Tensor()};
    }
  };
  Head head(Tensor x, nn::FeatCache& cache) const;
  // The rest for latent frames of a head (one when first_chunk: diffusers' first chunk skips
  // the temporal upsamplers' time_conv; any number after it, whose causal convs, time_conv
  // included, carry the earlier frames in the cache): the first up block's upsampler, the
  // other up blocks, norm_out and conv_out.
  Tensor tail(const Head& head, nn::FeatCache& cache, bool first_chunk) const;

 private:
  WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config, const std::vector<int64_t>& dims);

  nn::CausalConv3d conv_in_;
  WanMidBlock mid_block_;
  std::vector<std::variant<WanUpBlock, WanResidualUpBlock>> up_blocks_;
  nn::ChannelRMSNorm norm_out_;
  nn::CausalConv3d conv_out_;
};

}  // namespace vgen
