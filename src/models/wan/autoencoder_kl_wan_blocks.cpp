#include "models/wan/autoencoder_kl_wan_blocks.h"

#include <cmath>

#include "nn/attention.h"
#include "ops/ops.h"

namespace vgen {

WanResidualBlock::WanResidualBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim)
    : norm1_(load.weights, prefix + ".norm1", in_dim),
      conv1_(load.causal_conv(prefix + ".conv1", in_dim, out_dim, {3, 3, 3}, {1, 1, 1})),
      norm2_(load.weights, prefix + ".norm2", out_dim),
      conv2_(load.causal_conv(prefix + ".conv2", out_dim, out_dim, {3, 3, 3}, {1, 1, 1})) {
  if (in_dim != out_dim) conv_shortcut_.emplace(load.causal_conv(prefix + ".conv_shortcut", in_dim, out_dim, {1, 1, 1},
                                                                 {0, 0, 0}));
}

Tensor WanResidualBlock::forward(Tensor x, nn::FeatCache& cache) const {
  const Tensor h = conv_shortcut_ ? conv_shortcut_->forward(x, nullptr) : x;
  x = norm1_.forward(x, Activation::Silu);
  x = conv1_.forward(x, &cache);
  x = norm2_.forward(x, Activation::Silu);  // dropout: identity at inference
  x = conv2_.forward(x, &cache);
  return ops::add(x, h);
}

WanAttentionBlock::WanAttentionBlock(const WanVaeLoad& load, const std::string& prefix, int64_t dim)
    : dim_(dim),
      norm_(load.weights, prefix + ".norm", dim, /*images=*/true),
      to_qkv_(nn::Linear::from_conv(load.weights, prefix + ".to_qkv", {3 * dim, dim, 1, 1})),
      proj_(nn::Linear::from_conv(load.weights, prefix + ".proj", {dim, dim, 1, 1})) {}

Tensor WanAttentionBlock::forward(const Tensor& x) const {
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  // The norm is per position over channels, so it can run before the per-frame reshape.
  // Tokens [b*t, h*w, c]; the 1x1 convs are linears over c.
  const Tensor tokens = norm_.forward(x).permute({0, 2, 3, 4, 1}).reshape({b * t, h * w, c});
  Tensor qkv = to_qkv_.forward(tokens);
  // qkv.chunk(3, dim=-1) of diffusers, with the single head as dim 2.
  Tensor out = nn::scaled_dot_product_attention(qkv.narrow(2, 0, c).unsqueeze(2), qkv.narrow(2, c, c).unsqueeze(2),
                                                qkv.narrow(2, 2 * c, c).unsqueeze(2), {},
                                                1.0f / std::sqrt(static_cast<float>(dim_)));
  qkv = Tensor();
  out = proj_.forward(out);
  return ops::add(out.view({b, t, h, w, c}).permute({0, 4, 1, 2, 3}), x);
}

WanResample::WanResample(const WanVaeLoad& load, const std::string& prefix, int64_t dim, bool upsample3d)
    : resample_(nn::Conv3d::per_frame_conv2d(load.weights, prefix + ".resample.1", dim, dim / 2, {3, 3}, {1, 1},
                                             load.channels_last)) {
  if (upsample3d) time_conv_.emplace(load.causal_conv(prefix + ".time_conv", dim, 2 * dim, {3, 1, 1}, {1, 0, 0}));
}

Tensor WanResample::forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const {
  // diffusers marks the first call "Rep" and skips time_conv (so the first latent frame
  // gives one frame); its second call convolves without cache_x (zero past), storing
  // [zeros, x] when x has one frame. An empty slot is that same zero past, so the only
  // special case left is the first chunk.
  if (time_conv_ && !first_chunk) {
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    const Tensor y = time_conv_->forward(x, &cache);
    // [b, (2, c), t] -> [b, c, (t, 2)]: frame 2i from the first half of the channels.
    if (y.is_channels_last_3d()) {
      // Memory [b, t, h, w, (2, c)] -> [b, (t, 2), h, w, c].
      x = y.permute({0, 2, 3, 4, 1})
              .view({b, t, h, w, 2, c})
              .permute({0, 1, 4, 2, 3, 5})
              .contiguous()
              .view({b, 2 * t, h, w, c})
              .permute({0, 4, 1, 2, 3});
    } else {
      x = y.view({b, 2, c, t, h, w}).permute({0, 2, 3, 1, 4, 5}).reshape({b, c, 2 * t, h, w});
    }
  }
  // nearest-exact at scale 2 picks source index dst/2, as nearest does.
  return resample_.forward(ops::upsample_nearest2x(x));
}

WanUpBlock::WanUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim,
                       int64_t num_res_blocks, std::optional<bool> upsample3d) {
  for (int64_t i = 0; i <= num_res_blocks; ++i)
    resnets_.emplace_back(load, fmt::format("{}.resnets.{}", prefix, i), i == 0 ? in_dim : out_dim, out_dim);
  if (upsample3d) upsampler_.emplace(load, prefix + ".upsamplers.0", out_dim, *upsample3d);
}

Tensor WanUpBlock::forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const {
  for (const WanResidualBlock& resnet : resnets_) x = resnet.forward(std::move(x), cache);
  if (upsampler_) x = upsampler_->forward(std::move(x), cache, first_chunk);
  return x;
}

namespace {

// Channel widths of WanDecoder3d: dim * [dim_mult[-1]] + reversed(dim_mult).
std::vector<int64_t> decoder_dims(const AutoencoderKLWanConfig& cfg) {
  std::vector<int64_t> dims{cfg.decoder_dim() * cfg.dim_mult.back()};
  for (auto it = cfg.dim_mult.rbegin(); it != cfg.dim_mult.rend(); ++it) dims.push_back(cfg.decoder_dim() * *it);
  return dims;
}

std::vector<WanUpBlock> make_up_blocks(const WanVaeLoad& load, const AutoencoderKLWanConfig& cfg,
                                       const std::vector<int64_t>& dims) {
  const size_t levels = cfg.dim_mult.size();
  std::vector<WanUpBlock> blocks;
  for (size_t i = 0; i < levels; ++i) {
    // Each upsampler halves the channels, so blocks after the first take dims[i] / 2.
    const int64_t in = i > 0 ? dims[i] / 2 : dims[i];
    std::optional<bool> upsample3d;  // none on the last level; temperal_upsample is reversed
    if (i != levels - 1) upsample3d = cfg.temperal_downsample[cfg.temperal_downsample.size() - 1 - i];
    blocks.emplace_back(load, fmt::format("decoder.up_blocks.{}", i), in, dims[i + 1], cfg.num_res_blocks,
                        upsample3d);
  }
  return blocks;
}

}  // namespace

WanDecoder3d::WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config)
    : WanDecoder3d(load, config, decoder_dims(config)) {}

WanDecoder3d::WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config,
                           const std::vector<int64_t>& dims)
    : conv_in_(load.causal_conv("decoder.conv_in", config.z_dim, dims[0], {3, 3, 3}, {1, 1, 1})),
      mid_resnet0_(load, "decoder.mid_block.resnets.0", dims[0], dims[0]),
      mid_attention_(load, "decoder.mid_block.attentions.0", dims[0]),
      mid_resnet1_(load, "decoder.mid_block.resnets.1", dims[0], dims[0]),
      up_blocks_(make_up_blocks(load, config, dims)),
      norm_out_(load.weights, "decoder.norm_out", dims.back()),
      conv_out_(load.causal_conv("decoder.conv_out", dims.back(), config.out_channels, {3, 3, 3}, {1, 1, 1})) {}

Tensor WanDecoder3d::forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const {
  x = conv_in_.forward(x, &cache);
  x = mid_resnet0_.forward(std::move(x), cache);
  x = mid_attention_.forward(x);
  x = mid_resnet1_.forward(std::move(x), cache);
  for (const WanUpBlock& block : up_blocks_) x = block.forward(std::move(x), cache, first_chunk);
  x = norm_out_.forward(x, Activation::Silu);
  return conv_out_.forward(x, &cache);
}

}  // namespace vgen
