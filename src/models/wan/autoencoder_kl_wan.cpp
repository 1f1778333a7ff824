// AutoencoderKLWan decode path. Classes and weight names follow diffusers'
// autoencoder_kl_wan.py: WanCausalConv3d, WanRMS_norm, WanResidualBlock, WanAttentionBlock,
// WanResample, WanUpBlock, WanMidBlock, WanDecoder3d.
//
// On a GPU the decoder runs channels-last (activations and filters laid out [N, D, H, W, C]
// under their usual [N, C, D, H, W] shapes, as PyTorch's channels_last_3d): cuDNN's NDHWC
// convolutions are faster, and the channel norm reads contiguous rows. VGEN_VAE_CHANNELS_LAST=0
// keeps NCDHW (for comparison); the values are the same either way.
#include "models/wan/autoencoder_kl_wan.h"

#include <array>
#include <cmath>
#include <filesystem>
#include <optional>

#include "core/env.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace fs = std::filesystem;

namespace vgen {
namespace {

// Frames of each causal conv's input kept for the next chunk (diffusers' CACHE_T).
constexpr int64_t kCacheT = 2;

// The feature cache of one decode() call: one slot per causal conv with a temporal kernel.
// An undefined slot means "no past yet", i.e. zero frames.
using FeatCache = std::vector<Tensor>;

const std::vector<float> kDefaultLatentsMean = {-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f,
                                                -0.1517f, 1.5508f,  0.4134f,  -0.0715f, 0.5517f, -0.3632f,
                                                -0.1922f, -0.9497f, 0.2503f,  -0.2921f};
const std::vector<float> kDefaultLatentsStd = {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                               3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};

bool channels_last_on(Device device) {
  static const bool allowed = env_flag("VGEN_VAE_CHANNELS_LAST", true);
  return allowed && device.is_cuda();
}

struct WeightLoader {
  const WeightStore& store;
  DType dtype;
  Device device;
  Tensor operator()(const std::string& name, const Shape& shape) const {
    return store.load(name, shape, dtype, device);
  }
  // A convolution filter, in the layout the activations will have.
  Tensor filter(const Tensor& w) const { return channels_last_on(device) ? w.to_channels_last_3d() : w; }
};

// The last kCacheT frames of the stream [past, x], as diffusers' callers store them; a copy,
// so that the cache does not keep the whole of x alive.
Tensor next_cache(const Tensor& x, const Tensor& past) {
  const int64_t t = x.size(2);
  if (t >= kCacheT || !past.defined())
    return x.narrow(2, std::max<int64_t>(0, t - kCacheT), std::min(t, kCacheT)).clone();
  return ops::cat({past.narrow(2, past.size(2) - 1, 1), x}, 2);
}

// WanCausalConv3d: 2*padding_t zero frames on the past side only (cached frames of the
// previous chunk take the place of as many), symmetric zero padding in space.
class CausalConv3d {
 public:
  CausalConv3d(const WeightLoader& load, const std::string& prefix, int64_t in, int64_t out,
               std::array<int64_t, 3> kernel, std::array<int64_t, 3> padding, int64_t* num_slots)
      : weight_(load.filter(load(prefix + ".weight", {out, in, kernel[0], kernel[1], kernel[2]}))),
        bias_(load(prefix + ".bias", {out})),
        causal_pad_(2 * padding[0]) {
    params_.padding = {0, padding[1], padding[2]};
    // Every Wan conv with a temporal kernel pads exactly CACHE_T frames, so a full cache
    // replaces all the padding.
    VGEN_CHECK(causal_pad_ == 0 || causal_pad_ == kCacheT, "{}: unsupported temporal padding {}", prefix, padding[0]);
    if (causal_pad_ > 0) slot_ = (*num_slots)++;
  }

  // With `cache`, past frames come from this conv's slot, which then holds the last kCacheT
  // frames of [past, x]; without it, the past is zeros (diffusers' call without cache_x).
  Tensor forward(const Tensor& x, FeatCache* cache) const {
    if (causal_pad_ == 0) return ops::conv3d(x, weight_, bias_, params_);
    Tensor past;
    if (cache) {
      past = (*cache)[slot_];
      (*cache)[slot_] = next_cache(x, past);
    }
    // The zero frames in front are the convolution's own (asymmetric) padding: no pad copy.
    Conv3dParams p = params_;
    Tensor input = x;
    if (past.defined()) {
      p.time_padding_before = causal_pad_ - past.size(2);
      input = ops::cat({std::move(past), x}, 2);
    } else {
      p.time_padding_before = causal_pad_;
    }
    return ops::conv3d(input, weight_, bias_, p);
  }

 private:
  Tensor weight_, bias_;
  Conv3dParams params_;
  int64_t causal_pad_;
  int64_t slot_ = -1;
};

// WanRMS_norm (no bias in the VAE): F.normalize over channels * sqrt(C) * gamma, with the
// SiLU that follows it fused in when act is Silu.
class RMSNorm {
 public:
  RMSNorm(const WeightLoader& load, const std::string& prefix, int64_t dim, bool images)
      : gamma_(load(prefix + ".gamma", images ? Shape{dim, 1, 1} : Shape{dim, 1, 1, 1})) {}
  Tensor operator()(const Tensor& x, Activation act = Activation::None) const {
    return ops::channel_rms_norm(x, gamma_, {}, act);
  }

 private:
  Tensor gamma_;
};

class ResidualBlock {
 public:
  ResidualBlock(const WeightLoader& load, const std::string& prefix, int64_t in, int64_t out, int64_t* num_slots)
      : norm1_(load, prefix + ".norm1", in, false),
        conv1_(load, prefix + ".conv1", in, out, {3, 3, 3}, {1, 1, 1}, num_slots),
        norm2_(load, prefix + ".norm2", out, false),
        conv2_(load, prefix + ".conv2", out, out, {3, 3, 3}, {1, 1, 1}, num_slots) {
    if (in != out) conv_shortcut_.emplace(load, prefix + ".conv_shortcut", in, out, std::array<int64_t, 3>{1, 1, 1},
                                          std::array<int64_t, 3>{0, 0, 0}, num_slots);
  }

  Tensor forward(Tensor x, FeatCache& cache) const {
    const Tensor h = conv_shortcut_ ? conv_shortcut_->forward(x, nullptr) : x;
    x = norm1_(x, Activation::Silu);
    x = conv1_.forward(x, &cache);
    x = norm2_(x, Activation::Silu);  // dropout: identity at inference
    x = conv2_.forward(x, &cache);
    return ops::add(x, h);
  }

 private:
  RMSNorm norm1_;
  CausalConv3d conv1_;
  RMSNorm norm2_;
  CausalConv3d conv2_;
  std::optional<CausalConv3d> conv_shortcut_;
};

// WanAttentionBlock: single-head self-attention over the h*w positions of each frame.
class AttentionBlock {
 public:
  AttentionBlock(const WeightLoader& load, const std::string& prefix, int64_t dim)
      : dim_(dim),
        norm_(load, prefix + ".norm", dim, true),
        to_qkv_weight_(load(prefix + ".to_qkv.weight", {3 * dim, dim, 1, 1}).view({3 * dim, dim})),
        to_qkv_bias_(load(prefix + ".to_qkv.bias", {3 * dim})),
        proj_weight_(load(prefix + ".proj.weight", {dim, dim, 1, 1}).view({dim, dim})),
        proj_bias_(load(prefix + ".proj.bias", {dim})) {}

  Tensor forward(const Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    // The norm is per position over channels, so it can run before the per-frame reshape.
    // Tokens [b*t, h*w, c]; the 1x1 convs are linears over c.
    const Tensor tokens = norm_(x).permute({0, 2, 3, 4, 1}).reshape({b * t, h * w, c});
    Tensor qkv = ops::linear(tokens, to_qkv_weight_, to_qkv_bias_);
    // qkv.chunk(3, dim=-1) of diffusers, with the single head as dim 1.
    Tensor out = ops::attention(qkv.narrow(2, 0, c).unsqueeze(1), qkv.narrow(2, c, c).unsqueeze(1),
                                qkv.narrow(2, 2 * c, c).unsqueeze(1), {}, 1.0f / std::sqrt(static_cast<float>(dim_)));
    qkv = Tensor();
    out = ops::linear(out.squeeze(1), proj_weight_, proj_bias_);
    return ops::add(out.view({b, t, h, w, c}).permute({0, 4, 1, 2, 3}), x);
  }

 private:
  int64_t dim_;
  RMSNorm norm_;
  Tensor to_qkv_weight_, to_qkv_bias_, proj_weight_, proj_bias_;
};

// WanResample in "upsample2d" / "upsample3d" mode: (time_conv doubling the frames), then
// per frame nearest 2x upsampling and a 3x3 conv to dim/2 channels.
class Resample {
 public:
  Resample(const WeightLoader& load, const std::string& prefix, int64_t dim, bool upsample3d, int64_t* num_slots)
      : weight_(load.filter(load(prefix + ".resample.1.weight", {dim / 2, dim, 3, 3}).view({dim / 2, dim, 1, 3, 3}))),
        bias_(load(prefix + ".resample.1.bias", {dim / 2})) {
    params_.padding = {0, 1, 1};
    if (upsample3d) time_conv_.emplace(load, prefix + ".time_conv", dim, 2 * dim, std::array<int64_t, 3>{3, 1, 1},
                                       std::array<int64_t, 3>{1, 0, 0}, num_slots);
  }

  Tensor forward(Tensor x, FeatCache& cache, bool first_chunk) const {
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
    x = ops::upsample_nearest2x(x);
    return ops::conv3d(x, weight_, bias_, params_);
  }

 private:
  Tensor weight_, bias_;
  Conv3dParams params_;
  std::optional<CausalConv3d> time_conv_;
};

// WanUpBlock: num_res_blocks + 1 residual blocks, then an optional upsampler.
class UpBlock {
 public:
  UpBlock(const WeightLoader& load, const std::string& prefix, int64_t in, int64_t out, int64_t num_res_blocks,
          std::optional<bool> upsample3d, int64_t* num_slots) {
    for (int64_t i = 0; i <= num_res_blocks; ++i) {
      resnets_.emplace_back(load, fmt::format("{}.resnets.{}", prefix, i), i == 0 ? in : out, out, num_slots);
    }
    if (upsample3d) upsampler_.emplace(load, prefix + ".upsamplers.0", out, *upsample3d, num_slots);
  }

  Tensor forward(Tensor x, FeatCache& cache, bool first_chunk) const {
    for (const ResidualBlock& resnet : resnets_) x = resnet.forward(std::move(x), cache);
    if (upsampler_) x = upsampler_->forward(std::move(x), cache, first_chunk);
    return x;
  }

 private:
  std::vector<ResidualBlock> resnets_;
  std::optional<Resample> upsampler_;
};

// Channel widths of WanDecoder3d: dim * [dim_mult[-1]] + reversed(dim_mult).
std::vector<int64_t> decoder_dims(const AutoencoderKLWanConfig& cfg) {
  std::vector<int64_t> dims{cfg.decoder_dim() * cfg.dim_mult.back()};
  for (auto it = cfg.dim_mult.rbegin(); it != cfg.dim_mult.rend(); ++it) dims.push_back(cfg.decoder_dim() * *it);
  return dims;
}

// WanDecoder3d of the Wan2.1 VAE (is_residual false).
class Decoder {
 public:
  Decoder(const WeightLoader& load, const AutoencoderKLWanConfig& cfg, int64_t* num_slots)
      : Decoder(load, cfg, decoder_dims(cfg), num_slots) {}

  // One chunk (one latent frame) through the decoder, updating the feature cache.
  Tensor forward(Tensor x, FeatCache& cache, bool first_chunk) const {
    x = conv_in_.forward(x, &cache);
    x = mid_resnet0_.forward(std::move(x), cache);
    x = mid_attention_.forward(x);
    x = mid_resnet1_.forward(std::move(x), cache);
    for (const UpBlock& block : up_blocks_) x = block.forward(std::move(x), cache, first_chunk);
    x = norm_out_(x, Activation::Silu);
    return conv_out_.forward(x, &cache);
  }

 private:
  Decoder(const WeightLoader& load, const AutoencoderKLWanConfig& cfg, const std::vector<int64_t>& dims,
          int64_t* num_slots)
      : conv_in_(load, "decoder.conv_in", cfg.z_dim, dims[0], {3, 3, 3}, {1, 1, 1}, num_slots),
        mid_resnet0_(load, "decoder.mid_block.resnets.0", dims[0], dims[0], num_slots),
        mid_attention_(load, "decoder.mid_block.attentions.0", dims[0]),
        mid_resnet1_(load, "decoder.mid_block.resnets.1", dims[0], dims[0], num_slots),
        up_blocks_(make_up_blocks(load, cfg, dims, num_slots)),
        norm_out_(load, "decoder.norm_out", dims.back(), false),
        conv_out_(load, "decoder.conv_out", dims.back(), cfg.out_channels, {3, 3, 3}, {1, 1, 1}, num_slots) {}

  static std::vector<UpBlock> make_up_blocks(const WeightLoader& load, const AutoencoderKLWanConfig& cfg,
                                             const std::vector<int64_t>& dims, int64_t* num_slots) {
    const size_t levels = cfg.dim_mult.size();
    std::vector<UpBlock> blocks;
    for (size_t i = 0; i < levels; ++i) {
      // Each upsampler halves the channels, so blocks after the first take dims[i] / 2.
      const int64_t in = i > 0 ? dims[i] / 2 : dims[i];
      std::optional<bool> upsample3d;  // none on the last level; temperal_upsample is reversed
      if (i != levels - 1) upsample3d = cfg.temperal_downsample[cfg.temperal_downsample.size() - 1 - i];
      blocks.emplace_back(load, fmt::format("decoder.up_blocks.{}", i), in, dims[i + 1], cfg.num_res_blocks,
                          upsample3d, num_slots);
    }
    return blocks;
  }

  CausalConv3d conv_in_;
  ResidualBlock mid_resnet0_;
  AttentionBlock mid_attention_;
  ResidualBlock mid_resnet1_;
  std::vector<UpBlock> up_blocks_;
  RMSNorm norm_out_;
  CausalConv3d conv_out_;
};

std::optional<int64_t> optional_int(const Json& j, const std::string& key, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return json_require<int64_t>(j, key, path);
}

}  // namespace

AutoencoderKLWanConfig AutoencoderKLWanConfig::from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  const std::string class_name = json_get<std::string>(j, "_class_name", "AutoencoderKLWan", path);
  if (class_name != "AutoencoderKLWan") fail("{}: _class_name is '{}', expected 'AutoencoderKLWan'", path, class_name);
  AutoencoderKLWanConfig c;
  c.base_dim = json_get(j, "base_dim", c.base_dim, path);
  c.decoder_base_dim = optional_int(j, "decoder_base_dim", path);
  c.z_dim = json_get(j, "z_dim", c.z_dim, path);
  c.dim_mult = json_get(j, "dim_mult", c.dim_mult, path);
  c.num_res_blocks = json_get(j, "num_res_blocks", c.num_res_blocks, path);
  c.attn_scales = json_get(j, "attn_scales", c.attn_scales, path);
  c.temperal_downsample = json_get(j, "temperal_downsample", c.temperal_downsample, path);
  c.dropout = json_get(j, "dropout", c.dropout, path);
  c.latents_mean = json_get(j, "latents_mean", kDefaultLatentsMean, path);
  c.latents_std = json_get(j, "latents_std", kDefaultLatentsStd, path);
  c.is_residual = json_get(j, "is_residual", c.is_residual, path);
  c.in_channels = json_get(j, "in_channels", c.in_channels, path);
  c.out_channels = json_get(j, "out_channels", c.out_channels, path);
  c.patch_size = optional_int(j, "patch_size", path);
  c.scale_factor_temporal = json_get(j, "scale_factor_temporal", c.scale_factor_temporal, path);
  c.scale_factor_spatial = json_get(j, "scale_factor_spatial", c.scale_factor_spatial, path);

  if (c.is_residual)
    fail("{}: is_residual is true (the Wan2.2 VAE's residual up blocks); only the Wan2.1 VAE (is_residual false) is "
         "supported",
         path);
  if (c.patch_size && *c.patch_size != 1)
    fail("{}: patch_size {} (the Wan2.2 VAE's unpatchify) is not supported; only null or 1", path, *c.patch_size);
  if (c.base_dim <= 0 || c.decoder_dim() <= 0 || c.z_dim <= 0 || c.out_channels <= 0 || c.num_res_blocks < 0)
    fail("{}: base_dim, decoder_base_dim, z_dim, out_channels must be positive and num_res_blocks >= 0", path);
  if (c.dim_mult.empty()) fail("{}: dim_mult is empty", path);
  for (int64_t u : c.dim_mult) {
    // Blocks after the first take half their width: at least 2 channels are needed.
    if (u <= 0 || c.decoder_dim() * u < 2) fail("{}: dim_mult {} gives a decoder width below 2 channels", path, u);
  }
  if (c.temperal_downsample.size() + 1 != c.dim_mult.size())
    fail("{}: temperal_downsample has {} entries, expected {} (one per level of dim_mult but the last)", path,
         c.temperal_downsample.size(), c.dim_mult.size() - 1);
  if (static_cast<int64_t>(c.latents_mean.size()) != c.z_dim || static_cast<int64_t>(c.latents_std.size()) != c.z_dim)
    fail("{}: latents_mean and latents_std need z_dim = {} values (have {} and {})", path, c.z_dim,
         c.latents_mean.size(), c.latents_std.size());
  return c;
}

int64_t AutoencoderKLWanConfig::frames_per_latent() const {
  int64_t n = 1;
  for (bool t : temperal_downsample) n *= t ? 2 : 1;
  return n;
}

struct AutoencoderKLWan::Modules {
  Modules(const WeightLoader& load, const AutoencoderKLWanConfig& cfg)
      : post_quant_conv(load, "post_quant_conv", cfg.z_dim, cfg.z_dim, {1, 1, 1}, {0, 0, 0}, &num_cache_slots),
        decoder(load, cfg, &num_cache_slots) {}

  int64_t num_cache_slots = 0;  // declared first: the modules count their slots into it
  CausalConv3d post_quant_conv;
  Decoder decoder;
};

AutoencoderKLWan::AutoencoderKLWan() = default;
AutoencoderKLWan::~AutoencoderKLWan() = default;

std::unique_ptr<AutoencoderKLWan> AutoencoderKLWan::from_pretrained(const std::string& dir, DType dtype,
                                                                   Device device) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  std::unique_ptr<AutoencoderKLWan> vae(new AutoencoderKLWan());
  vae->config_ = AutoencoderKLWanConfig::from_json(read_json_file(config_path), config_path);
  vae->dir_ = dir;
  vae->dtype_ = dtype;
  vae->device_ = device;
  const WeightStore store = WeightStore::open_dir(dir);
  vae->modules_ = std::make_unique<Modules>(WeightLoader{store, dtype, device}, vae->config_);
  // encoder.* and quant_conv.* are legitimately left; a decoder tensor left over means the
  // config describes another decoder than the weights.
  for (const std::string& name : store.unused()) {
    if (name.starts_with("decoder.") || name.starts_with("post_quant_conv."))
      fail("{}: unexpected tensor '{}' for the decoder described by {}", dir, name, config_path);
  }
  return vae;
}

Tensor AutoencoderKLWan::decode(const Tensor& z) const {
  if (z.dim() != 5 || z.size(1) != config_.z_dim || z.size(2) < 1)
    fail("AutoencoderKLWan ({}): decode expects z [B, {}, T >= 1, h, w], got {}", dir_, config_.z_dim, z.str());
  if (z.device() != device_)
    fail("AutoencoderKLWan ({}): z is on {}, the model on {}", dir_, z.device().str(), device_.str());
  const int64_t num_frame = z.size(2);
  const int64_t up = int64_t{1} << (config_.dim_mult.size() - 1);
  Tensor x = modules_->post_quant_conv.forward(z.to(dtype_), nullptr);
  Tensor video = Tensor::empty({z.size(0), config_.out_channels, 1 + config_.frames_per_latent() * (num_frame - 1),
                                z.size(3) * up, z.size(4) * up},
                               dtype_, device_);
  // diffusers' _decode: one latent frame per decoder call, the first with first_chunk.
  // Chunks are clamped and written in place of its torch.cat + final clamp (same values).
  FeatCache cache(static_cast<size_t>(modules_->num_cache_slots));
  int64_t frame = 0;
  for (int64_t i = 0; i < num_frame; ++i) {
    Tensor chunk = x.narrow(2, i, 1);
    if (channels_last_on(device_)) chunk = chunk.to_channels_last_3d();
    const Tensor out = ops::clamp(modules_->decoder.forward(chunk, cache, i == 0), -1.0f, 1.0f);
    VGEN_CHECK(frame + out.size(2) <= video.size(2) && out.size(3) == video.size(3) && out.size(4) == video.size(4),
               "AutoencoderKLWan: decoder chunk {} gave {} for an output of {}", i, out.str(), video.str());
    video.narrow(2, frame, out.size(2)).copy_(out);
    frame += out.size(2);
  }
  VGEN_CHECK(frame == video.size(2), "AutoencoderKLWan: decoded {} frames, expected {}", frame, video.size(2));
  return video;
}

}  // namespace vgen
