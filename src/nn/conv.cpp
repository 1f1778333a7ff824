#include "nn/conv.h"

#include <algorithm>

#include "core/env.h"
#include "core/error.h"
#include "ops/ops.h"

namespace vgen::nn {
namespace {

Conv3dParams padded(std::array<int64_t, 3> padding) {
  Conv3dParams p;
  p.padding = padding;
  return p;
}

}  // namespace

bool vae_channels_last(Device device) {
  static const bool allowed = env_flag("VGEN_VAE_CHANNELS_LAST", true);
  return allowed && device.is_cuda();
}

Conv3d::Conv3d(Tensor weight, Tensor bias, Conv3dParams params, bool channels_last)
    : weight_(channels_last ? weight.to_channels_last_3d() : std::move(weight)),
      bias_(std::move(bias)),
      params_(params) {}

Conv3d::Conv3d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
               std::array<int64_t, 3> kernel, Conv3dParams params, bool channels_last)
    : Conv3d(weights.load(prefix + ".weight", {out, in, kernel[0], kernel[1], kernel[2]}),
             weights.load(prefix + ".bias", {out}), params, channels_last) {}

Conv3d Conv3d::per_frame_conv2d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
                                std::array<int64_t, 2> kernel, std::array<int64_t, 2> padding, bool channels_last,
                                std::array<int64_t, 2> stride) {
  const Tensor w = weights.load(prefix + ".weight", {out, in, kernel[0], kernel[1]});
  Conv3dParams params = padded({0, padding[0], padding[1]});
  params.stride = {1, stride[0], stride[1]};
  return Conv3d(w.view({out, in, 1, kernel[0], kernel[1]}), weights.load(prefix + ".bias", {out}), params,
                channels_last);
}

namespace {

// The 2x2 filters of UpsampleConv2d's phases from the 3x3 filter w [out, in, 3, 3] (float32,
// host): [(a, b, out), in, 1, 2, 2].
Tensor phase_filters(const Tensor& w) {
  const int64_t out = w.size(0), in = w.size(1);
  const std::vector<float> v = w.to_vector();
  // taps[a][r]: the rows (or columns) of the 3x3 filter that tap r of phase a sums.
  static constexpr int kTaps[2][2][2] = {{{0, 0}, {1, 2}}, {{0, 1}, {2, 2}}};
  static constexpr int kCount[2][2] = {{1, 2}, {2, 1}};
  std::vector<float> f(static_cast<size_t>(4 * out * in * 4), 0.0f);
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c) {
          const float* src = &v[static_cast<size_t>((o * in + c) * 9)];
          float* dst = &f[static_cast<size_t>((((2 * a + b) * out + o) * in + c) * 4)];
          for (int r = 0; r < 2; ++r)
            for (int s = 0; s < 2; ++s) {
              float sum = 0.0f;
              for (int i = 0; i < kCount[a][r]; ++i)
                for (int j = 0; j < kCount[b][s]; ++j) sum += src[kTaps[a][r][i] * 3 + kTaps[b][s][j]];
              dst[r * 2 + s] = sum;
            }
        }
  return Tensor::from_vector(f, {4 * out, in, 1, 2, 2});
}

}  // namespace

UpsampleConv2d::UpsampleConv2d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
                               bool channels_last)
    : conv_([&] {
        const Tensor w = weights.on_host_f32().load(prefix + ".weight", {out, in, 3, 3});
        const Tensor bias = weights.load(prefix + ".bias", {out});
        Conv3dParams p;
        p.padding = {0, 1, 1};
        return Conv3d(phase_filters(w).to(weights.dtype()).to(weights.device()),
                      ops::cat({bias, bias, bias, bias}, 0), p, channels_last);
      }()),
      out_(out) {}

Tensor UpsampleConv2d::forward(Tensor x, const std::function<Tensor()>& make_addend) const {
  VGEN_CHECK(x.dim() == 5, "UpsampleConv2d: input {} is not [B, C, T, H, W]", x.str());
  const int64_t b = x.size(0), t = x.size(2), h = x.size(3), w = x.size(4), o = out_;
  const Tensor phases = conv_.forward(x);  // [B, 4 x out, T, H + 1, W + 1]
  x = Tensor();
  const Tensor addend = make_addend ? make_addend() : Tensor();
  const int64_t ft = addend.defined() && addend.dim() == 8 ? addend.size(3) : 1;
  VGEN_CHECK(!addend.defined() || (ft > 0 && t % ft == 0 && addend.shape() == Shape{b, o, t / ft, ft, h, 2, w, 2}),
             "UpsampleConv2d: addend {} is not the result [{}, {}, {}, {}, {}] split as [B, C, T / ft, ft, H, 2, W, 2]",
             addend.str(), b, o, t, 2 * h, 2 * w);
  // Output pixel (2i + a, 2j + c) of channel k is phase (a, c)'s, channel (2a + c) * out + k at
  // position (i + a, j + c): one strided view of the phases, [B, out, T / ft, ft, H, 2, W, 2].
  const Shape& s = phases.strides();
  const Tensor split = phases.as_strided({b, o, t / ft, ft, h, 2, w, 2},
                                         {s[0], s[1], ft * s[2], s[2], s[3], s[3] + 2 * o * s[1], s[4], s[4] + o * s[1]});
  // Written in the memory order of the phases' format: [B, T, H, 2, W, 2, out] channels-last.
  const bool channels_last = phases.prefers_channels_last_3d();
  const std::vector<int64_t> order =
      channels_last ? std::vector<int64_t>{0, 2, 3, 4, 5, 6, 7, 1} : std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7};
  const Tensor y = addend.defined() ? ops::add(split.permute(order), addend.permute(order))
                                    : split.permute(order).contiguous();
  VGEN_CHECK(y.is_contiguous(), "UpsampleConv2d: the interleaved phases {} are not dense", y.str());
  return channels_last ? y.view({b, t, 2 * h, 2 * w, o}).permute({0, 4, 1, 2, 3}) : y.view({b, o, t, 2 * h, 2 * w});
}

namespace {
thread_local Communicator* row_split = nullptr;
}  // namespace

RowSplit::RowSplit(Communicator& comm) : previous_(row_split) { row_split = &comm; }
RowSplit::~RowSplit() { row_split = previous_; }
Communicator* RowSplit::current() { return row_split; }

Tensor with_neighbour_rows(const Tensor& x, int64_t rows, Communicator& comm) {
  const int n = comm.size(), r = comm.rank();
  const int64_t h = x.size(3);
  VGEN_CHECK(rows <= h, "row-split conv: {} halo rows from shards of {} rows ({})", rows, h, x.str());
  // Every rank sends its last rows down the ring and its first rows up; the edges' wrap-around
  // rows are replaced by the zero padding the unsplit conv has there.
  Tensor above = comm.send_recv(x.narrow(3, h - rows, rows), (r + 1) % n, (r + n - 1) % n);
  Tensor below = comm.send_recv(x.narrow(3, 0, rows), (r + n - 1) % n, (r + 1) % n);
  if (r == 0) above = Tensor::zeros(above.shape(), x.dtype(), x.device());
  if (r == n - 1) below = Tensor::zeros(below.shape(), x.dtype(), x.device());
  Tensor out = ops::cat({above, x, below}, 3);
  return x.is_channels_last_3d() ? out.to_channels_last_3d() : out;
}

Tensor gather_rows(const Tensor& x, Communicator& comm) {
  const Tensor all = comm.all_gather(x);  // [n, B, C, T, h, W]
  Tensor out = all.permute({1, 2, 3, 0, 4, 5}).reshape({x.size(0), x.size(1), x.size(2), comm.size() * x.size(3), x.size(4)});
  return x.is_channels_last_3d() ? out.to_channels_last_3d() : out;
}

Tensor Conv3d::forward(const Tensor& x, const Conv3dParams& params, const Tensor& residual) const {
  Communicator* split = RowSplit::current();
  if (split && split->size() > 1 && params.padding[1] > 0) {
    VGEN_CHECK(params.stride[1] == 1, "row-split conv: a height stride of {} is not split", params.stride[1]);
    Conv3dParams p = params;
    p.padding[1] = 0;
    return ops::conv3d(with_neighbour_rows(x, params.padding[1], *split), weight_, bias_, p, residual);
  }
  return ops::conv3d(x, weight_, bias_, params, residual);
}

CausalConv3d::CausalConv3d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
                           std::array<int64_t, 3> kernel, std::array<int64_t, 3> padding, bool channels_last,
                           FeatCacheSlots& slots)
    : conv_(weights, prefix, in, out, kernel, padded({0, padding[1], padding[2]}), channels_last),
      causal_pad_(2 * padding[0]) {
  VGEN_CHECK(causal_pad_ == 0 || causal_pad_ == kCausalCacheFrames, "{}: unsupported temporal padding {}", prefix,
             padding[0]);
  if (causal_pad_ > 0) slot_ = slots.count++;
}

Tensor CausalConv3d::forward(const Tensor& x, FeatCache* cache) const {
  const Tensor past = causal_pad_ > 0 && cache ? (*cache)[slot_] : Tensor();
  if (!past.defined()) return convolve(x, 0, cache);
  return convolve(ops::cat({past, x}, 2), past.size(2), cache);
}

Tensor CausalConv3d::forward(const Tensor& like, const Writer& write, FeatCache* cache,
                             const Tensor& residual) const {
  const Tensor past = causal_pad_ > 0 && cache ? (*cache)[slot_] : Tensor();
  const int64_t past_frames = past.defined() ? past.size(2) : 0;
  Shape shape = like.shape();
  shape[2] += past_frames;
  Tensor input = Tensor::empty_like_format(like, shape, like.dtype());
  if (past_frames > 0) input.narrow(2, 0, past_frames).copy_(past);
  // The frames the cache keeps, written by `write` beside the input when x alone holds them.
  Tensor tail;
  if (causal_pad_ > 0 && cache && like.size(2) >= kCausalCacheFrames) {
    Shape tail_shape = like.shape();
    tail_shape[2] = kCausalCacheFrames;
    tail = Tensor::empty_like_format(like, tail_shape, like.dtype());
  }
  write(input.narrow(2, past_frames, like.size(2)), tail);
  return convolve(input, past_frames, cache, residual, tail);
}

Tensor CausalConv3d::convolve(const Tensor& input, int64_t past_frames, FeatCache* cache, const Tensor& residual,
                              const Tensor& tail) const {
  if (causal_pad_ == 0) return conv_.forward(input, residual);
  if (cache) {
    // The last kCausalCacheFrames frames of the stream, as diffusers' callers store them; a
    // copy, so that the cache does not keep the whole input alive.
    const int64_t n = std::min(input.size(2), kCausalCacheFrames);
    (*cache)[slot_] = tail.defined() ? tail : input.narrow(2, input.size(2) - n, n).clone();
  }
  // The zero frames in front are the convolution's own (asymmetric) padding: no pad copy.
  Conv3dParams p = conv_.params();
  p.time_padding_before = causal_pad_ - past_frames;
  return conv_.forward(input, p, residual);
}

}  // namespace vgen::nn
