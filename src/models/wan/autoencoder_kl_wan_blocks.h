// The blocks AutoencoderKLWan's encoder and decoder share, named as diffusers'
// autoencoder_kl_wan.py: WanResidualBlock, WanAttentionBlock, WanResample (all four modes),
// the Wan2.2 VAE's parameter-free shortcuts AvgDown3D / DupUp3D, and patchify / unpatchify.
// Built from nn modules; each chunk of frames goes through with the causal convs' feature
// cache, as diffusers' _encode / _decode.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/wan/autoencoder_kl_wan.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace vgen {

// How the modules of the encoder or the decoder are built: the checkpoint, whether
// activations run channels-last (filters are stored to match), and the cache slots of that
// half (each half has its own feature cache).
struct WanVaeLoad {
  const nn::Weights& weights;
  bool channels_last;
  nn::FeatCacheSlots& slots;

  nn::CausalConv3d causal_conv(const std::string& prefix, int64_t in, int64_t out, std::array<int64_t, 3> kernel,
                               std::array<int64_t, 3> padding) const {
    return nn::CausalConv3d(weights, prefix, in, out, kernel, padding, channels_last, slots);
  }
};

// A residual block's output with its skip connection not yet added: x + skip (x alone when
// skip is undefined). The next residual block's first channel norm, or the decoder's norm_out,
// adds it as it reads the sum (ops::residual_channel_rms_norm), writing the sum into x: so x
// must be the decode's own buffer (a conv's result), not a view of a tensor kept elsewhere.
struct WanSkipSum {
  Tensor x, skip;
  // x + skip as a tensor (a new one), or x.
  Tensor sum() const;
};

class WanResidualBlock {
 public:
  WanResidualBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim);
  Tensor forward(Tensor x, nn::FeatCache& cache) const;
  // forward() with the skip connections left to the reader: the input's added by norm1 as it
  // reads it (unless conv_shortcut needs the sum first), the output's left in the result.
  WanSkipSum forward(WanSkipSum x, nn::FeatCache& cache) const;

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

// WanMidBlock (num_layers 1): resnet, attention, resnet.
class WanMidBlock {
 public:
  WanMidBlock(const WanVaeLoad& load, const std::string& prefix, int64_t dim);
  Tensor forward(Tensor x, nn::FeatCache& cache) const;

 private:
  WanResidualBlock resnet0_;
  WanAttentionBlock attention_;
  WanResidualBlock resnet1_;
};

enum class WanResampleMode { Upsample2d, Upsample3d, Downsample2d, Downsample3d };

// WanResample. Upsampling: (upsample3d: time_conv doubling the frames), then per frame
// nearest 2x upsampling and a 3x3 conv to `upsample_out_dim` channels. Downsampling: per
// frame ZeroPad2d((0, 1, 0, 1)) and a stride-2 3x3 conv, then (downsample3d) a stride-2
// temporal conv over [last frame of the previous chunk, this chunk].
class WanResample {
 public:
  // upsample_out_dim: diffusers' default is dim / 2 (Wan2.1); the residual decoder keeps dim.
  WanResample(const WanVaeLoad& load, const std::string& prefix, int64_t dim, WanResampleMode mode,
              int64_t upsample_out_dim);
  // first_chunk: the decoder's first latent frame (upsample3d skips time_conv for it).
  // Upsampling: `addend` (making the result split as UpsampleConv2d::forward takes it) is
  // added to the result in the op that forms it.
  Tensor forward(Tensor x, nn::FeatCache& cache, bool first_chunk,
                 const std::function<Tensor()>& addend = nullptr) const;

 private:
  Tensor upsample(Tensor x, nn::FeatCache& cache, bool first_chunk, const std::function<Tensor()>& addend) const;
  Tensor downsample(Tensor x, nn::FeatCache& cache) const;

  std::optional<nn::UpsampleConv2d> upsample_;  // upsampling: resample.0 and resample.1 (a Conv2d per frame)
  std::optional<nn::Conv3d> downsample_;        // downsampling: resample.1, a stride-2 Conv2d per frame
  std::optional<nn::CausalConv3d> time_conv_;  // upsample3d: (3, 1, 1), 2 * dim channels
  std::optional<nn::Conv3d> down_time_conv_;   // downsample3d: (3, 1, 1), stride 2, no padding
  int64_t down_cache_slot_ = -1;               // downsample3d: the previous chunk's last frame
};

// AvgDown3D: the Wan2.2 encoder's shortcut. Groups of factor_t x factor_s x factor_s
// positions of every channel become channels (zero frames in front when the frame count is
// not a multiple of factor_t), and each output channel is the mean of `group_size`
// consecutive ones. That is a convolution with kernel = stride = (factor_t, factor_s,
// factor_s) and a fixed filter of 1 / group_size entries, which is how it runs here: one op
// on every backend, in the activations' layout, no intermediate copies.
class AvgDown3D {
 public:
  AvgDown3D(const WanVaeLoad& load, int64_t in_channels, int64_t out_channels, int64_t factor_t, int64_t factor_s);
  Tensor forward(const Tensor& x) const;

 private:
  int64_t factor_t_, factor_s_;
  Tensor filter_;  // [out, in, factor_t, factor_s, factor_s]
};

// DupUp3D: the Wan2.2 decoder's shortcut. repeat_interleave of the channels, then groups of
// channels become factor_t x factor_s x factor_s positions; on the first chunk the first
// factor_t - 1 frames are dropped (as the upsampler's time_conv is skipped for it). Written with
// one copy from a stride-0 view of x, in x's layout: the repeated channels are never stored.
class DupUp3D {
 public:
  DupUp3D(int64_t in_channels, int64_t out_channels, int64_t factor_t, int64_t factor_s);
  Tensor forward(const Tensor& x, bool first_chunk) const;
  // forward(x, first_chunk) split as [B, out, T / f, f, H, factor_s, W, factor_s] (frame t * f + i,
  // row h * factor_s + p, column w * factor_s + q; f is factor_t, or 1 in the first chunk), as
  // UpsampleConv2d takes its addend: where every output channel repeats one of x's (all Wan
  // configs), a view of x with stride 0 along the repeats and nothing materialized; else
  // forward()'s result, split.
  Tensor split_view(const Tensor& x, bool first_chunk) const;

 private:
  // [b, out / m, m, t, factor_t, h, factor_s, w, factor_s]: the output's elements from x.
  Tensor split_source(const Tensor& x) const;

  int64_t in_channels_, out_channels_, factor_t_, factor_s_, repeats_;
  int64_t m_ = 1;  // output channels (i, j < m) that all repeat x's i
};

// diffusers' patchify: [B, C, F, H, W] -> [B, C * p * p, F, H / p, W / p], channel
// c * p * p + (w offset) * p + (h offset). A contiguous copy; p = 1 gives x.
Tensor patchify(const Tensor& x, int64_t patch_size);
// diffusers' unpatchify of `x` [B, C * p * p, t, h, w], written into frames
// [frame, frame + t) of `video` [B, C, F, h * p, w * p] (contiguous).
void unpatchify_into(const Tensor& video, int64_t frame, const Tensor& x, int64_t patch_size);

}  // namespace vgen
