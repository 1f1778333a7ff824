// AutoencoderKL (diffusers' autoencoder_kl.py + vae.py Encoder/Decoder), the 2-D image VAE of
// FLUX.1 (16 latent channels, x8, scaling_factor / shift_factor) and Stable Diffusion: conv_in,
// DownEncoderBlock2D / UpDecoderBlock2D stacks of ResnetBlock2D (GroupNorm, SiLU, 3x3 conv),
// a mid block with one single-head spatial self-attention, GroupNorm + SiLU + conv_out.
//
// Images are [B, C, H, W]; internally each conv runs as a one-frame 3-D convolution, so every
// backend's conv3d serves. GroupNorm (+ the SiLU after it) is one fused op with float32
// statistics, as torch's. On a GPU (nn::vae_channels_last) the encoder and decoder run
// channels-last: filters and feature maps laid out [B, 1, H, W, C], which is also the [B, HW, C]
// token layout the mid-block attention reads and writes without a transpose. Inputs and
// outputs are plain NCHW either way, and the values are the same.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "nn/conv.h"
#include "nn/linear.h"

namespace vgen {

// Fields named as in the VAE's config.json; defaults are diffusers'.
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels{64};
  int64_t layers_per_block = 1;
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;  // FLUX: 0.1159; null for SD
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  // 2 ** (len(block_out_channels) - 1): the pipelines' vae_scale_factor.
  int64_t scale_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }

  static AutoencoderKLConfig from_json(const Json& j, const std::string& path);
};

class AutoencoderKL {
 public:
  // Reads dir/config.json and the weights (checked against the config's shapes) in `dtype` on `device`.
  static std::unique_ptr<AutoencoderKL> from_pretrained(const std::string& dir, DType dtype, Device device);

  const AutoencoderKLConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  struct LatentDist {
    Tensor mean, logvar;  // [B, latent_channels, H / f, W / f]; logvar clamped to [-30, 20]
  };
  // image [B, in_channels, H, W] (H and W multiples of scale_factor()) -> the diagonal
  // Gaussian's parameters (DiagonalGaussianDistribution; its mode() is `mean`).
  LatentDist encode(const Tensor& image) const;
  // z [B, latent_channels, h, w] (already unscaled: z / scaling_factor + shift_factor) ->
  // [B, out_channels, h * f, w * f] in the compute dtype.
  Tensor decode(const Tensor& z) const;

 private:
  struct GroupNorm {
    Tensor weight, bias;  // [C]
    int64_t groups = 0;
    float eps = 1e-6f;
    Tensor forward(const Tensor& x, bool silu) const;
  };
  struct Resnet {
    GroupNorm norm1, norm2;
    std::unique_ptr<nn::Conv3d> conv1, conv2, conv_shortcut;
    Tensor forward(const Tensor& x) const;
  };
  struct MidBlock {
    Resnet resnet0, resnet1;
    bool attention = false;
    GroupNorm group_norm;
    nn::Linear to_qkv, to_out;
    Tensor forward(const Tensor& x) const;
  };
  struct Stage {  // a DownEncoderBlock2D or UpDecoderBlock2D
    std::vector<Resnet> resnets;
    std::unique_ptr<nn::Conv3d> resample;             // downsamplers.0.conv
    std::unique_ptr<nn::UpsampleConv2d> upsample;     // upsamplers.0 (nearest 2x, then its conv)
  };

  AutoencoderKL(AutoencoderKLConfig config, DType dtype, Device device);

  GroupNorm group_norm(const nn::Weights& w, const std::string& prefix, int64_t channels) const;
  Resnet resnet(const nn::Weights& w, const std::string& prefix, int64_t in, int64_t out) const;
  MidBlock mid_block(const nn::Weights& w, const std::string& prefix, int64_t channels) const;
  std::unique_ptr<nn::Conv3d> conv(const nn::Weights& w, const std::string& prefix, int64_t in, int64_t out,
                                   int64_t kernel, int64_t stride = 1) const;
  // x [B, C, 1, H, W] in the layout the convolutions run in.
  Tensor in_conv_layout(const Tensor& x) const;

  AutoencoderKLConfig config_;
  DType dtype_;
  Device device_;
  bool channels_last_;  // feature maps and filters laid out channels-last (see the top)

  // Encoder.
  std::unique_ptr<nn::Conv3d> enc_conv_in_, enc_conv_out_, quant_conv_;
  std::vector<Stage> down_blocks_;
  MidBlock enc_mid_;
  GroupNorm enc_norm_out_;
  // Decoder.
  std::unique_ptr<nn::Conv3d> post_quant_conv_, dec_conv_in_, dec_conv_out_;
  MidBlock dec_mid_;
  std::vector<Stage> up_blocks_;
  GroupNorm dec_norm_out_;
};

}  // namespace vgen
