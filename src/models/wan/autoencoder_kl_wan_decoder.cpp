#include "models/wan/autoencoder_kl_wan_decoder.h"

namespace vgen {

WanUpBlock::WanUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim,
                       int64_t num_res_blocks, std::optional<WanResampleMode> upsample_mode) {
  for (int64_t i = 0; i <= num_res_blocks; ++i)
    resnets_.emplace_back(load, fmt::format("{}.resnets.{}", prefix, i), i == 0 ? in_dim : out_dim, out_dim);
  if (upsample_mode) upsampler_.emplace(load, prefix + ".upsamplers.0", out_dim, *upsample_mode, out_dim / 2);
}

WanSkipSum WanUpBlock::forward(WanSkipSum x, nn::FeatCache& cache, bool first_chunk) const {
  return forward_upsample(forward_resnets(std::move(x), cache), Tensor(), cache, first_chunk);
}

WanSkipSum WanUpBlock::forward_resnets(WanSkipSum x, nn::FeatCache& cache) const {
  for (const WanResidualBlock& resnet : resnets_) x = resnet.forward(std::move(x), cache);
  return x;
}

WanSkipSum WanUpBlock::forward_upsample(WanSkipSum x, const Tensor&, nn::FeatCache& cache, bool first_chunk) const {
  if (!upsampler_) return x;
  Tensor sum = x.sum();
  x = {};  // the sum's parts, let go before the upsampler runs
  return {upsampler_->forward(std::move(sum), cache, first_chunk), {}};
}

WanResidualUpBlock::WanResidualUpBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim,
                                       int64_t out_dim, int64_t num_res_blocks, bool temperal_upsample, bool up_flag) {
  if (up_flag) avg_shortcut_.emplace(in_dim, out_dim, temperal_upsample ? 2 : 1, 2);
  for (int64_t i = 0; i <= num_res_blocks; ++i)
    resnets_.emplace_back(load, fmt::format("{}.resnets.{}", prefix, i), i == 0 ? in_dim : out_dim, out_dim);
  if (up_flag)
    upsampler_.emplace(load, prefix + ".upsampler", out_dim,
                       temperal_upsample ? WanResampleMode::Upsample3d : WanResampleMode::Upsample2d, out_dim);
}

WanSkipSum WanResidualUpBlock::forward(WanSkipSum x, nn::FeatCache& cache, bool first_chunk) const {
  // Ops never write their inputs, so holding x is diffusers' x.clone() (the shortcut's input is
  // the sum, formed here when the block has a shortcut).
  if (avg_shortcut_) x = {x.sum(), {}};
  const Tensor input = avg_shortcut_ ? x.x : Tensor();
  return forward_upsample(forward_resnets(std::move(x), cache), input, cache, first_chunk);
}

WanSkipSum WanResidualUpBlock::forward_resnets(WanSkipSum x, nn::FeatCache& cache) const {
  for (const WanResidualBlock& resnet : resnets_) x = resnet.forward(std::move(x), cache);
  return x;
}

WanSkipSum WanResidualUpBlock::forward_upsample(WanSkipSum x, const Tensor& input, nn::FeatCache& cache,
                                                bool first_chunk) const {
  // The shortcut and the upsampler come together (up_flag).
  if (!upsampler_) return x;
  Tensor y = x.sum();
  x = {};  // the sum's parts, let go before the upsampler runs
  // The shortcut's nearest-neighbour repeat of the block's input is added where the upsampler
  // interleaves its phases, read as a stride-0 view: no output-sized copy of it, no extra pass.
  return {upsampler_->forward(std::move(y), cache, first_chunk,
                              [&] { return avg_shortcut_->split_view(input, first_chunk); }),
          {}};
}

namespace {

std::vector<std::variant<WanUpBlock, WanResidualUpBlock>> make_up_blocks(const WanVaeLoad& load,
                                                                         const AutoencoderKLWanConfig& cfg,
                                                                         const std::vector<int64_t>& dims) {
  const size_t levels = cfg.dim_mult.size();
  std::vector<std::variant<WanUpBlock, WanResidualUpBlock>> blocks;
  for (size_t i = 0; i < levels; ++i) {
    const std::string prefix = fmt::format("decoder.up_blocks.{}", i);
    const bool up_flag = i != levels - 1;
    // temperal_upsample is temperal_downsample reversed.
    const bool temporal = up_flag && cfg.temperal_downsample[cfg.temperal_downsample.size() - 1 - i];
    if (cfg.is_residual) {
      blocks.emplace_back(std::in_place_type<WanResidualUpBlock>, load, prefix, dims[i], dims[i + 1],
                          cfg.num_res_blocks, temporal, up_flag);
    } else {
      // Wan2.1's upsamplers halve the channels, so blocks after the first take dims[i] / 2.
      std::optional<WanResampleMode> mode;
      if (up_flag) mode = temporal ? WanResampleMode::Upsample3d : WanResampleMode::Upsample2d;
      blocks.emplace_back(std::in_place_type<WanUpBlock>, load, prefix, i > 0 ? dims[i] / 2 : dims[i], dims[i + 1],
                          cfg.num_res_blocks, mode);
    }
  }
  return blocks;
}

}  // namespace

WanDecoder3d::WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config)
    : WanDecoder3d(load, config, config.decoder_dims()) {}

WanDecoder3d::WanDecoder3d(const WanVaeLoad& load, const AutoencoderKLWanConfig& config,
                           const std::vector<int64_t>& dims)
    : conv_in_(load.causal_conv("decoder.conv_in", config.z_dim, dims[0], {3, 3, 3}, {1, 1, 1})),
      mid_block_(load, "decoder.mid_block", dims[0]),
      up_blocks_(make_up_blocks(load, config, dims)),
      norm_out_(load.weights, "decoder.norm_out", dims.back()),
      conv_out_(load.causal_conv("decoder.conv_out", dims.back(), config.out_channels, {3, 3, 3}, {1, 1, 1})) {}

Tensor WanDecoder3d::forward(Tensor x, nn::FeatCache& cache, bool first_chunk) const {
  return tail(head(std::move(x), cache), cache, first_chunk);
}

WanDecoder3d::Head WanDecoder3d::head(Tensor x, nn::FeatCache& cache) const {
  x = conv_in_.forward(x, &cache);
  Head h;
  h.input = mid_block_.forward(std::move(x), cache);
  // Formed whole: the tail takes it in views of a few frames (Head::frames).
  h.x = std::visit([&](const auto& b) { return b.forward_resnets(WanSkipSum{h.input, {}}, cache); }, up_blocks_.front())
            .sum();
  if (!std::visit([](const auto& b) { return b.has_shortcut(); }, up_blocks_.front())) h.input = Tensor();
  return h;
}

Tensor WanDecoder3d::tail(const Head& head, nn::FeatCache& cache, bool first_chunk) const {
  VGEN_CHECK(!first_chunk || head.x.size(2) == 1, "WanDecoder3d: the first chunk is one latent frame, got {}",
             head.x.str());
  WanSkipSum x = std::visit(
      [&](const auto& b) { return b.forward_upsample(WanSkipSum{head.x, {}}, head.input, cache, first_chunk); },
      up_blocks_.front());
  for (size_t i = 1; i < up_blocks_.size(); ++i)
    x = std::visit([&](const auto& b) { return b.forward(std::move(x), cache, first_chunk); }, up_blocks_[i]);
  // The last block's skip connection, if left to it, is added by norm_out as it reads the sum.
  auto write = [&](const Tensor& out, const Tensor& tail) {
    if (x.skip.defined()) norm_out_.forward_residual(x.x, x.skip, Activation::Silu, x.x, out, tail);
    else norm_out_.forward(x.x, Activation::Silu, out, tail);
  };
  return conv_out_.forward(x.x, write, &cache);
}

}  // namespace vgen
