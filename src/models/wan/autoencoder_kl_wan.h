// AutoencoderKLWan (diffusers' autoencoder_kl_wan.py), the Wan video VAE: Wan2.1's and
// Wan2.2's (is_residual, patch_size 2). Encode (quant_conv + WanEncoder3d, the first frame
// then 4 frames at a time) and decode (post_quant_conv + WanDecoder3d, one latent frame at a
// time), each chunk through the causal convs' feature cache, exactly as diffusers' _encode
// and _decode: memory bounded by a chunk, not by the video.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "core/tensor.h"
#include "io/json.h"

namespace vgen {

// Fields named as in the VAE's config.json; defaults are diffusers' (register_to_config).
struct AutoencoderKLWanConfig {
  int64_t base_dim = 96;
  std::optional<int64_t> decoder_base_dim;  // the decoder's width when it differs from base_dim
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<double> attn_scales;                           // Wan2.1 encoder only; diffusers can run none but []
  std::vector<bool> temperal_downsample{false, true, true};  // the decoder upsamples in reverse order
  double dropout = 0.0;                                      // inference: no effect
  std::vector<float> latents_mean;
  std::vector<float> latents_std;
  bool is_residual = false;           // Wan2.2: residual down/up blocks with AvgDown3D / DupUp3D shortcuts
  int64_t in_channels = 3;            // the encoder's, after patchify
  int64_t out_channels = 3;           // the decoder's, before unpatchify
  std::optional<int64_t> patch_size;  // Wan2.2: 2, pixel (un)shuffle around the encoder / decoder
  int64_t scale_factor_temporal = 4;
  int64_t scale_factor_spatial = 8;

  // Reads and checks a config.json (`path` names it in errors), failing on configs diffusers
  // could not build or that disagree with themselves (scale factors vs the architecture).
  static AutoencoderKLWanConfig from_json(const Json& j, const std::string& path);

  int64_t decoder_dim() const { return decoder_base_dim.value_or(base_dim); }
  int64_t patch() const { return patch_size.value_or(1); }
  // Output frames per latent frame after the first: 2 per temporal upsample (4 for Wan).
  int64_t frames_per_latent() const;
  // Pixels per latent pixel: 2 per level but the last, times patch_size (8 Wan2.1, 16 Wan2.2).
  int64_t spatial_compression() const;
  // Channel widths: WanEncoder3d's base_dim * ([1] + dim_mult), WanDecoder3d's
  // decoder_dim * ([dim_mult[-1]] + reversed(dim_mult)).
  std::vector<int64_t> encoder_dims() const;
  std::vector<int64_t> decoder_dims() const;
};

// Which halves of the VAE from_pretrained loads (a text-to-video pipeline only decodes).
struct AutoencoderKLWanParts {
  bool encoder = true;
  bool decoder = true;
};

class AutoencoderKLWan {
 public:
  using Parts = AutoencoderKLWanParts;

  // Reads `dir/config.json` and the weights of `parts` (encoder: quant_conv.*, encoder.*;
  // decoder: post_quant_conv.*, decoder.*) from `dir`, converted to `dtype` on `device`.
  // Tensors of a part not loaded may be absent; any other tensor left over is an error.
  static std::unique_ptr<AutoencoderKLWan> from_pretrained(const std::string& dir, DType dtype, Device device,
                                                           Parts parts = {});
  ~AutoencoderKLWan();

  const AutoencoderKLWanConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }

  // video [B, in_channels / patch_size^2, 1 + 4k, H, W] in [-1, 1], H and W multiples of
  // s = spatial_compression() (= scale_factor_spatial) -> the latent distribution's mode (its
  // mean: the first z_dim channels of quant_conv's output), not normalized:
  // [B, z_dim, 1 + k, H / s, W / s] in the model's dtype. Needs the encoder loaded.
  Tensor encode(const Tensor& video) const;

  // z [B, z_dim, T, h, w], already de-normalized (latents * std + mean) -> video
  // [B, out_channels / patch_size^2, 1 + 4(T-1), s h, s w] clamped to [-1, 1], in the model's
  // dtype. Needs the decoder loaded.
  // With `split` (more than one rank): a parallel decode, each rank decoding its share of the
  // latent rows (the 3x3 convs exchange boundary rows, the mid-block attention gathers the
  // frame: nn::RowSplit) and the shares gathered: the same video on every rank, exactly the
  // unsplit one. Needs the latent height divisible by the ranks; else every rank decodes it all.
  Tensor decode(const Tensor& z, Communicator* split = nullptr) const;

  // How many latent frames the decoder's head (conv_in, the mid block, the first up block's
  // residual blocks: the smallest of its convolutions) takes per call; the rest of the decoder
  // takes one, as diffusers' _decode. The same values for any count (1 is diffusers' order);
  // more run those convolutions on more positions at once, and hold the head's results for
  // that many frames while the rest decodes them: at the default 8, a sixth of the size of
  // one of the last up block's per-chunk buffers for the Wan2.2 VAE (which also keeps the
  // first up block's input for its shortcut), a twelfth for Wan2.1's. For tests and tuning.
  void set_decode_head_frames(int64_t frames);
  static constexpr int64_t kDefaultDecodeHeadFrames = 8;

  // How many latent frames the rest of the decoder takes per call after the first (which is
  // always one): 1, diffusers' _decode, by default. More gives the same values with fewer,
  // larger convolutions and the activations of that many frames at once (its peak memory grows
  // with it). Capped by the head's frames per call.
  void set_decode_chunk_frames(int64_t frames);

 private:
  struct Encoder;  // quant_conv + WanEncoder3d, defined in the .cpp
  struct Decoder;  // post_quant_conv + WanDecoder3d

  AutoencoderKLWan();

  AutoencoderKLWanConfig config_;
  std::string dir_;
  DType dtype_ = DType::F32;
  Device device_;
  std::unique_ptr<Encoder> encoder_;  // null when not loaded
  std::unique_ptr<Decoder> decoder_;
  int64_t decode_head_frames_ = kDefaultDecodeHeadFrames;
  int64_t decode_chunk_frames_ = 1;
};

}  // namespace vgen
