#include "models/wan/autoencoder_kl_wan_blocks.h"

#include <array>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "nn/attention.h"
#include "ops/ops.h"

namespace vgen {

WanResidualBlock::WanResidualBlock(const WanVaeLoad& load, const std::string& prefix, int64_t in_dim, int64_t out_dim)
    : norm1_(load.weights, prefix + ".norm1", in_dim),
      conv1_(load.causal_conv(prefix + ".conv1", in_dim, out_dim, {3, 3, 3}, {1, 1, 1})),
      norm2_(load.weights, prefix + ".norm2", out_dim),
      conv2_(load.causal_conv(prefix + ".conv2", out_dim, out_dim, {3, 3, 3}, {1, 1, 1})) {
  if (in_dim != out_dim)
    conv_shortcut_.emplace(load.causal_conv(prefix + ".conv_shortcut", in_dim, out_dim, {1, 1, 1}, {0, 0, 0}));
}

Tensor WanSkipSum::sum() const { return skip.defined() ? ops::add(x, skip) : x; }

Tensor WanResidualBlock::forward(Tensor x, nn::FeatCache& cache) const {
  const Tensor h = conv_shortcut_ ? conv_shortcut_->forward(x, nullptr) : x;
  // Each norm writes its result straight into its conv's input, behind the cached frames.
  x = conv1_.forward(
      x, [&](const Tensor& out, const Tensor& tail) { norm1_.forward(x, Activation::Silu, out, tail); }, &cache);
  // dropout: identity at inference
  // The skip connection is added to conv2's result by the convolution op (ops::conv3d).
  return conv2_.forward(
      x, [&](const Tensor& out, const Tensor& tail) { norm2_.forward(x, Activation::Silu, out, tail); }, &cache, h);
}

WanSkipSum WanResidualBlock::forward(WanSkipSum in, nn::FeatCache& cache) const {
  Tensor x, h;
  if (in.skip.defined() && !conv_shortcut_) {
    // The previous block's skip connection, added by norm1 into that block's conv2 result (its
    // own buffer) as it normalizes the sum into conv1's input: one pass fewer over the sum.
    x = conv1_.forward(
        in.x,
        [&](const Tensor& out, const Tensor& tail) {
          h = norm1_.forward_residual(in.x, in.skip, Activation::Silu, in.x, out, tail).residual;
        },
        &cache);
  } else {
    const Tensor input = in.sum();
    h = conv_shortcut_ ? conv_shortcut_->forward(input, nullptr) : input;
    x = conv1_.forward(
        input, [&](const Tensor& out, const Tensor& tail) { norm1_.forward(input, Activation::Silu, out, tail); },
        &cache);
  }
  in = {};
  x = conv2_.forward(
      x, [&](const Tensor& out, const Tensor& tail) { norm2_.forward(x, Activation::Silu, out, tail); }, &cache);
  return {std::move(x), std::move(h)};
}

WanAttentionBlock::WanAttentionBlock(const WanVaeLoad& load, const std::string& prefix, int64_t dim)
    : dim_(dim),
      norm_(load.weights, prefix + ".norm", dim, /*images=*/true),
      to_qkv_(nn::Linear::from_conv(load.weights, prefix + ".to_qkv", {3 * dim, dim, 1, 1})),
      proj_(nn::Linear::from_conv(load.weights, prefix + ".proj", {dim, dim, 1, 1})) {}

Tensor WanAttentionBlock::forward(const Tensor& x) const {
  // Row-split decode: the attention spans the frame, so it runs on the gathered rows and
  // each rank keeps its own.
  if (Communicator* split = nn::RowSplit::current(); split && split->size() > 1) {
    static const std::shared_ptr<Communicator> one = make_single_communicator();
    const nn::RowSplit off(*one);  // the gathered frame is whole
    const int64_t h = x.size(3);
    return forward(nn::gather_rows(x, *split)).narrow(3, split->rank() * h, h);
  }
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

WanMidBlock::WanMidBlock(const WanVaeLoad& load, const std::string& prefix, int64_t dim)
    : resnet0_(load, prefix + ".resnets.0", dim, dim),
      attention_(load, prefix + ".attentions.0", dim),
      resnet1_(load, prefix + ".resnets.1", dim, dim) {}

Tensor WanMidBlock::forward(Tensor x, nn::FeatCache& cache) const {
  x = resnet0_.forward(WanSkipSum{std::move(x), {}}, cache).sum();
  x = attention_.forward(x);
  return resnet1_.forward(WanSkipSum{std::move(x), {}}, cache).sum();
}

namespace {

bool is_upsample(WanResampleMode mode) {
  return mode == WanResampleMode::Upsample2d || mode == WanResampleMode::Upsample3d;
}

// nn.ZeroPad2d((0, 1, 0, 1)) per frame: one zero row below, one zero column to the right,
// in x's memory layout.
Tensor zero_pad_bottom_right(const Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  const Tensor out = x.prefers_channels_last_3d()
                         ? Tensor::zeros({b, t, h + 1, w + 1, c}, x.dtype(), x.device()).permute({0, 4, 1, 2, 3})
                         : Tensor::zeros({b, c, t, h + 1, w + 1}, x.dtype(), x.device());
  out.narrow(3, 0, h).narrow(4, 0, w).copy_(x);
  return out;
}

}  // namespace

WanResample::WanResample(const WanVaeLoad& load, const std::string& prefix, int64_t dim, WanResampleMode mode,
                         int64_t upsample_out_dim) {
  if (is_upsample(mode))
    upsample_.emplace(load.weights, prefix + ".resample.1", dim, upsample_out_dim, load.channels_last);
  else
    downsample_.emplace(nn::Conv3d::per_frame_conv2d(load.weights, prefix + ".resample.1", dim, dim, {3, 3}, {0, 0},
                                                     load.channels_last, {2, 2}));
  if (mode == WanResampleMode::Upsample3d)
    time_conv_.emplace(load.causal_conv(prefix + ".time_conv", dim, 2 * dim, {3, 1, 1}, {1, 0, 0}));
  if (mode == WanResampleMode::Downsample3d) {
    // A WanCausalConv3d without padding is a plain strided conv; forward gives it the past frame.
    Conv3dParams params;
    params.stride = {2, 1, 1};
    down_time_conv_.emplace(load.weights, prefix + ".time_conv", dim, dim, std::array<int64_t, 3>{3, 1, 1}, params,
                            load.channels_last);
    down_cache_slot_ = load.slots.count++;
  }
}

Tensor WanResample::forward(Tensor x, nn::FeatCache& cache, bool first_chunk,
                            const std::function<Tensor()>& addend) const {
  VGEN_CHECK(upsample_ || !addend, "WanResample: a downsampler takes no addend");
  return upsample_ ? upsample(std::move(x), cache, first_chunk, addend) : downsample(std::move(x), cache);
}

Tensor WanResample::upsample(Tensor x, nn::FeatCache& cache, bool first_chunk,
                             const std::function<Tensor()>& addend) const {
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
  return upsample_->forward(std::move(x), addend);
}

Tensor WanResample::downsample(Tensor x, nn::FeatCache& cache) const {
  x = downsample_->forward(zero_pad_bottom_right(x));
  if (!down_time_conv_) return x;
  // diffusers: the first chunk only fills the cache (its frames pass through); later chunks
  // convolve [previous chunk's last frame, x] with stride 2 and keep x's last frame.
  Tensor& past = cache[static_cast<size_t>(down_cache_slot_)];
  Tensor last = x.narrow(2, x.size(2) - 1, 1).clone();
  if (past.defined()) x = down_time_conv_->forward(ops::cat({past, x}, 2));
  past = std::move(last);
  return x;
}

AvgDown3D::AvgDown3D(const WanVaeLoad& load, int64_t in_channels, int64_t out_channels, int64_t factor_t,
                     int64_t factor_s)
    : factor_t_(factor_t), factor_s_(factor_s) {
  const int64_t factor = factor_t * factor_s * factor_s;
  VGEN_CHECK(in_channels * factor % out_channels == 0, "AvgDown3D: in_channels {} x factor {} not divisible by {}",
             in_channels, factor, out_channels);
  const int64_t group_size = in_channels * factor / out_channels;
  // Input channel c at offset k within its factor_t x factor_s x factor_s block is channel
  // c * factor + k after diffusers' permute, and lands in output channel (c * factor + k) / group_size.
  std::vector<float> filter(static_cast<size_t>(out_channels * in_channels * factor), 0.0f);
  for (int64_t c = 0; c < in_channels; ++c)
    for (int64_t k = 0; k < factor; ++k)
      filter[static_cast<size_t>(((c * factor + k) / group_size * in_channels + c) * factor + k)] =
          1.0f / static_cast<float>(group_size);
  Tensor f = Tensor::from_vector(filter, {out_channels, in_channels, factor_t, factor_s, factor_s})
                 .to(load.weights.dtype())
                 .to(load.weights.device());
  filter_ = load.channels_last ? f.to_channels_last_3d() : f;
}

Tensor AvgDown3D::forward(const Tensor& x) const {
  Conv3dParams p;
  p.stride = {factor_t_, factor_s_, factor_s_};
  p.time_padding_before = (factor_t_ - x.size(2) % factor_t_) % factor_t_;
  return ops::conv3d(x, filter_, Tensor(), p);
}

DupUp3D::DupUp3D(int64_t in_channels, int64_t out_channels, int64_t factor_t, int64_t factor_s)
    : in_channels_(in_channels), out_channels_(out_channels), factor_t_(factor_t), factor_s_(factor_s) {
  const int64_t factor = factor_t * factor_s * factor_s;
  VGEN_CHECK(out_channels * factor % in_channels == 0, "DupUp3D: out_channels {} x factor {} not divisible by {}",
             out_channels, factor, in_channels);
  repeats_ = out_channels * factor / in_channels;
  m_ = repeats_ % factor == 0 ? repeats_ / factor : 1;
}

Tensor DupUp3D::split_source(const Tensor& x) const {
  const int64_t b = x.size(0), t = x.size(2), h = x.size(3), w = x.size(4);
  const int64_t ft = factor_t_, fs = factor_s_, m = m_;
  // diffusers: channel n of repeat_interleave(x, repeats) is x's n / repeats; then channel
  // o * factor + (a * fs + p) * fs + q goes to position (frame t * ft + a, row h * fs + p,
  // column w * fs + q) of output channel o. That is y seen as [b, o, t, a, h, p, w, q] read
  // from x with the repeated indices as stride-0 dims:
  //  - repeats a multiple m of factor: output channels (i, j < m) all come from x's i;
  //  - else, when repeats is the size of the innermost (a, p, q) offsets (1, fs, fs * fs or
  //    factor), those offsets repeat one channel and the outer ones index x's channels.
  std::array<int64_t, 3> from_x{ft, fs, fs};  // the extents of (a, p, q) that index x (1: repeated)
  int64_t rest = repeats_ / m;
  for (int d = 2; d >= 0 && rest > 1 && rest % from_x[static_cast<size_t>(d)] == 0; --d) {
    rest /= from_x[static_cast<size_t>(d)];
    from_x[static_cast<size_t>(d)] = 1;
  }
  // [b, o / m, j, a, p, q, t, h, w]; an uneven regrouping (no Wan config has one) repeats x
  // into a contiguous tensor first.
  const Tensor src =
      rest == 1 ? x.unflatten(1, {out_channels_ / m, 1, from_x[0], from_x[1], from_x[2]})
                : x.unsqueeze(2).expand({b, in_channels_, repeats_, t, h, w}).contiguous().view(
                      {b, out_channels_, 1, ft, fs, fs, t, h, w});
  return src.permute({0, 1, 2, 6, 3, 7, 4, 8, 5}).expand({b, out_channels_ / m, m, t, ft, h, fs, w, fs});
}

Tensor DupUp3D::forward(const Tensor& x, bool first_chunk) const {
  const int64_t b = x.size(0), t = x.size(2), h = x.size(3), w = x.size(4);
  const int64_t ft = factor_t_, fs = factor_s_;
  Tensor y = Tensor::empty_like_format(x, {b, out_channels_, t * ft, h * fs, w * fs}, x.dtype());
  y.unflatten(4, {w, fs}).unflatten(3, {h, fs}).unflatten(2, {t, ft}).unflatten(1, {out_channels_ / m_, m_}).copy_(
      split_source(x));
  if (first_chunk) y = y.narrow(2, ft - 1, t * ft - (ft - 1));
  return y;
}

Tensor DupUp3D::split_view(const Tensor& x, bool first_chunk) const {
  const int64_t t = x.size(2), fs = factor_s_;
  // The first chunk keeps frames [ft - 1, t * ft): the last of one input frame's ft. A view
  // when every output channel repeats one of x's (all Wan configs): output channel o reads x's
  // channel o (the temporal blocks) or o * 2 + p (the spatial block, row offset p), a walk the
  // CUDA elementwise kernels gather in 16-byte output words.
  if (m_ == 1 && (!first_chunk || factor_t_ == 1 || t == 1)) {
    const Tensor v = split_source(x).select(2, 0);
    return first_chunk ? v.narrow(3, factor_t_ - 1, 1) : v;
  }
  const Tensor y = forward(x, first_chunk);
  const int64_t f = first_chunk ? 1 : factor_t_;
  return y.unflatten(4, {y.size(4) / fs, fs}).unflatten(3, {y.size(3) / fs, fs}).unflatten(2, {y.size(2) / f, f});
}

Tensor patchify(const Tensor& x, int64_t patch_size) {
  if (patch_size == 1) return x;
  const int64_t b = x.size(0), c = x.size(1), f = x.size(2), h = x.size(3), w = x.size(4), p = patch_size;
  VGEN_CHECK(h % p == 0 && w % p == 0, "patchify: {} is not divisible by patch_size {}", x.str(), p);
  return x.contiguous()
      .view({b, c, f, h / p, p, w / p, p})
      .permute({0, 1, 6, 4, 2, 3, 5})
      .contiguous()
      .view({b, c * p * p, f, h / p, w / p});
}

void unpatchify_into(const Tensor& video, int64_t frame, const Tensor& x, int64_t patch_size) {
  const int64_t p = patch_size, b = x.size(0), c = x.size(1) / (p * p), t = x.size(2), h = x.size(3), w = x.size(4);
  VGEN_CHECK(video.dim() == 5 && video.size(0) == b && video.size(1) == c && frame + t <= video.size(2) &&
                 video.size(3) == h * p && video.size(4) == w * p,
             "unpatchify: {} into frame {} of {}", x.str(), frame, video.str());
  // diffusers: x.view(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2) is [b, c, t, h, p, w, p].
  // One copy from x as laid out (a channels-last x is read in place: runs of p elements p apart).
  video.view({b, c, video.size(2), h, p, w, p})
      .narrow(2, frame, t)
      .copy_(x.unflatten(1, {c, p, p}).permute({0, 1, 4, 5, 3, 6, 2}));
}

}  // namespace vgen
