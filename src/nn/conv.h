// 3-D convolutions: torch.nn.Conv3d, and the causal convolution of video VAEs with the
// feature cache that lets them decode one latent frame at a time (diffusers' WanCausalConv3d).
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "nn/weights.h"
#include "ops/backend.h"

namespace vgen::nn {

// Row-split convolutions (the parallel VAE decode): while a RowSplit lives on a thread, the
// feature maps its Conv3d / CausalConv3d calls see are the rank's rows (dim 3) of the whole,
// rank r of `comm` holding rows [r * h, (r + 1) * h) with h the same on every rank. A conv
// with height padding p then takes p rows from each neighbour (zero rows at the top and bottom
// edges) in place of its zero padding, so the rows it returns are exactly those of the unsplit
// conv. Every rank of comm makes the same calls.
class RowSplit {
 public:
  explicit RowSplit(Communicator& comm);
  ~RowSplit();
  RowSplit(const RowSplit&) = delete;
  RowSplit& operator=(const RowSplit&) = delete;
  // The communicator of the innermost live RowSplit of this thread, else nullptr.
  static Communicator* current();

 private:
  Communicator* previous_;
};
// x [B, C, T, h, W] with `rows` rows of the neighbours above and below: [B, C, T, h + 2 rows, W].
Tensor with_neighbour_rows(const Tensor& x, int64_t rows, Communicator& comm);
// The whole of a row-split x: [B, C, T, size * h, W] on every rank.
Tensor gather_rows(const Tensor& x, Communicator& comm);

// Whether the VAEs run their convolutions channels-last (activations and filters laid out
// [N, D, H, W, C], PyTorch's channels_last_3d) on `device`: on a GPU, where cuDNN's NDHWC
// convolutions are faster and the norms read contiguous rows of channels, unless
// VGEN_VAE_CHANNELS_LAST=0 (kept NCDHW, for comparison; the values are the same either way).
bool vae_channels_last(Device device);

// torch.nn.Conv3d: PREFIX.weight [out, in, kt, kh, kw], PREFIX.bias [out].
class Conv3d {
 public:
  // `channels_last`: the activations will be laid out [N, D, H, W, C] (channels_last_3d), so
  // the filter is stored that way too (cuDNN's NDHWC convolutions).
  Conv3d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out, std::array<int64_t, 3> kernel,
         Conv3dParams params, bool channels_last);
  // torch.nn.Conv2d applied to every frame: PREFIX.weight [out, in, kh, kw] used as [out, in, 1, kh, kw].
  static Conv3d per_frame_conv2d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
                                 std::array<int64_t, 2> kernel, std::array<int64_t, 2> padding, bool channels_last,
                                 std::array<int64_t, 2> stride = {1, 1});

  // `residual` (optional, the output's shape): added to the result (ops::conv3d).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const { return forward(x, params_, residual); }
  // With other stride/padding than the layer's (a causal conv's time padding).
  Tensor forward(const Tensor& x, const Conv3dParams& params, const Tensor& residual = Tensor()) const;
  const Conv3dParams& params() const { return params_; }

 private:
  friend class UpsampleConv2d;
  Conv3d(Tensor weight, Tensor bias, Conv3dParams params, bool channels_last);

  Tensor weight_, bias_;
  Conv3dParams params_;
};

// diffusers' 2-D upsamplers: every frame upsampled 2x by nearest neighbour (torch's "nearest"
// and "nearest-exact" agree at scale 2), then torch.nn.Conv2d(in, out, 3, padding=1):
// PREFIX.weight [out, in, 3, 3], PREFIX.bias [out]. Computed without the upsampled copy: output
// pixel (2i + a, 2j + b) sees input rows i - 1, i, i (a = 0) or i, i, i + 1 (a = 1), and the
// same for columns, so each of the four phases (a, b) is a 2x2 convolution of the input whose
// taps are sums of the 3x3 filter's (rows {0}, {1, 2} for a = 0 and {0, 1}, {2} for a = 1).
// One 2x2 convolution with padding 1 and 4 x out channels makes all four phases at
// (H + 1) x (W + 1) positions (phase (a, b) is the window at offset (a, b)), and one copy per
// phase interleaves them: 4/9 of the multiply-adds, and no 4x copy of the input. The same
// values up to the order of the additions; the summed taps are formed in float32 from the
// checkpoint and rounded once to the model's dtype.
class UpsampleConv2d {
 public:
  UpsampleConv2d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out, bool channels_last);

  // x [B, in, T, H, W] -> [B, out, T, 2H, 2W], in the memory format of the backend's
  // convolution results (channels-last on a GPU when x is). With `addend`, the result plus
  // addend(), in the one op that interleaves the phases: addend() is the result's shape split
  // as [B, out, T / ft, ft, H, 2, W, 2] (frame t * ft + f, row 2i + a, column 2j + b), any
  // strides (stride 0 where it repeats, e.g. a nearest-upsampled shortcut that is never
  // materialized). It is called after the convolution, so that a tensor it makes is not alive
  // during it; x is let go after the convolution (pass it moved so that it is freed there).
  Tensor forward(Tensor x, const std::function<Tensor()>& addend = nullptr) const;

 private:
  Conv3d conv_;  // [4 x out, in, 1, 2, 2], padding 1 in height and width
  int64_t out_;
};

// Frames of each causal conv's input kept for the next chunk (diffusers' CACHE_T).
inline constexpr int64_t kCausalCacheFrames = 2;

// The feature cache of one chunked decode: one slot per causal conv with a temporal kernel.
// An undefined slot means "no past yet", i.e. zero frames.
using FeatCache = std::vector<Tensor>;

// Counts the cache slots of a model's causal convs while it is built.
struct FeatCacheSlots {
  int64_t count = 0;
};

// diffusers' WanCausalConv3d: 2 * padding_t zero frames on the past side only (cached frames
// of the previous chunk take the place of as many), symmetric zero padding in space.
class CausalConv3d {
 public:
  // A temporal kernel takes a slot of `slots`; its padding must be exactly kCausalCacheFrames
  // frames (every Wan conv's), so that a full cache replaces all of it.
  CausalConv3d(const Weights& weights, const std::string& prefix, int64_t in, int64_t out,
               std::array<int64_t, 3> kernel, std::array<int64_t, 3> padding, bool channels_last,
               FeatCacheSlots& slots);

  // With `cache`, past frames come from this conv's slot, which then holds the last
  // kCausalCacheFrames frames of [past, x]; without it the past is zeros (diffusers' call
  // without cache_x).
  Tensor forward(const Tensor& x, FeatCache* cache) const;
  // The same for the x that `write` stores into the tensor it is given: x's shape, in the
  // memory format of `like` (a tensor of x's shape, e.g. the input of the norm that makes x).
  // That tensor is the conv's input behind the cached frames, so x is not copied to join them
  // (the copy of a whole chunk that concatenating them takes). When x alone holds the frames the
  // cache keeps, `write` also gets `tail` ([B, C, kCausalCacheFrames, H, W], else undefined) to
  // store x's last frames in, which the cache then keeps (no copy read back from the input).
  // `residual` (optional, the output's shape): added to the result (ops::conv3d; a ResNet
  // block's skip connection).
  using Writer = std::function<void(const Tensor& x, const Tensor& tail)>;
  Tensor forward(const Tensor& like, const Writer& write, FeatCache* cache, const Tensor& residual = Tensor()) const;

 private:
  // Convolves `input`, whose first `past_frames` frames are the cached ones, and updates the
  // cache (with `tail`, the input's last frames already written, when defined).
  Tensor convolve(const Tensor& input, int64_t past_frames, FeatCache* cache, const Tensor& residual = Tensor(),
                  const Tensor& tail = Tensor()) const;

  Conv3d conv_;
  int64_t causal_pad_;
  int64_t slot_ = -1;
};

}  // namespace vgen::nn
