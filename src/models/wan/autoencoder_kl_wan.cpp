// AutoencoderKLWan: config, loading, the chunked encode and decode loops. The encoder and
// decoder are in autoencoder_kl_wan_{encoder,decoder}.h, their blocks in
// autoencoder_kl_wan_blocks.h, built from nn modules.
//
// On a GPU the encoder and decoder run channels-last (activations and filters laid out
// [N, D, H, W, C] under their usual [N, C, D, H, W] shapes, as PyTorch's channels_last_3d):
// cuDNN's NDHWC convolutions are faster, and the channel norm reads contiguous rows.
// VGEN_VAE_CHANNELS_LAST=0 keeps NCDHW (nn::vae_channels_last); the values are the same either way.
#include "models/wan/autoencoder_kl_wan.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "models/wan/autoencoder_kl_wan_decoder.h"
#include "models/wan/autoencoder_kl_wan_encoder.h"
#include "nn/conv.h"
#include "nn/weights.h"
#include "ops/ops.h"

namespace fs = std::filesystem;

namespace vgen {
namespace {

const std::vector<float> kDefaultLatentsMean = {-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f,
                                                -0.1517f, 1.5508f,  0.4134f,  -0.0715f, 0.5517f, -0.3632f,
                                                -0.1922f, -0.9497f, 0.2503f,  -0.2921f};
const std::vector<float> kDefaultLatentsStd = {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                               3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};

}  // namespace

AutoencoderKLWanConfig AutoencoderKLWanConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path);
  const std::string class_name = r.string("_class_name", "AutoencoderKLWan");
  if (class_name != "AutoencoderKLWan") fail("{}: _class_name is '{}', expected 'AutoencoderKLWan'", path, class_name);
  AutoencoderKLWanConfig c;
  c.base_dim = r.integer("base_dim", c.base_dim);
  c.decoder_base_dim = r.optional_integer("decoder_base_dim");
  c.z_dim = r.integer("z_dim", c.z_dim);
  c.dim_mult = r.integer_list("dim_mult", c.dim_mult);
  c.num_res_blocks = r.integer("num_res_blocks", c.num_res_blocks);
  c.attn_scales = r.number_list("attn_scales", c.attn_scales);
  c.temperal_downsample = r.boolean_list("temperal_downsample", c.temperal_downsample);
  c.dropout = r.number("dropout", c.dropout);
  for (auto [key, values, fallback] : {std::tuple{"latents_mean", &c.latents_mean, &kDefaultLatentsMean},
                                       std::tuple{"latents_std", &c.latents_std, &kDefaultLatentsStd}}) {
    values->clear();
    for (double v : r.number_list(key, {fallback->begin(), fallback->end()})) values->push_back(static_cast<float>(v));
  }
  c.is_residual = r.boolean("is_residual", c.is_residual);
  c.in_channels = r.integer("in_channels", c.in_channels);
  c.out_channels = r.integer("out_channels", c.out_channels);
  c.patch_size = r.optional_integer("patch_size");
  c.scale_factor_temporal = r.integer("scale_factor_temporal", c.scale_factor_temporal);
  c.scale_factor_spatial = r.integer("scale_factor_spatial", c.scale_factor_spatial);

  if (c.base_dim <= 0 || c.decoder_dim() <= 0 || c.z_dim <= 0 || c.num_res_blocks < 0)
    fail("{}: base_dim, decoder_base_dim, z_dim must be positive and num_res_blocks >= 0", path);
  if (c.patch() < 1) fail("{}: patch_size {} must be null or at least 1", path, c.patch());
  const int64_t patch_area = c.patch() * c.patch();
  for (auto [key, channels] : {std::pair{"in_channels", c.in_channels}, std::pair{"out_channels", c.out_channels}}) {
    if (channels <= 0 || channels % patch_area != 0)
      fail("{}: {} {} must be a positive multiple of patch_size^2 = {}", path, key, channels, patch_area);
  }
  if (c.dim_mult.empty()) fail("{}: dim_mult is empty", path);
  for (int64_t u : c.dim_mult) {
    // Wan2.1's up blocks after the first take half their width: at least 2 channels are needed.
    if (u <= 0 || c.decoder_dim() * u < 2) fail("{}: dim_mult {} gives a decoder width below 2 channels", path, u);
  }
  if (c.temperal_downsample.size() + 1 != c.dim_mult.size())
    fail("{}: temperal_downsample has {} entries, expected {} (one per level of dim_mult but the last)", path,
         c.temperal_downsample.size(), c.dim_mult.size() - 1);
  if (c.is_residual) {
    // The channel regrouping of AvgDown3D / DupUp3D, which diffusers refuses to build otherwise.
    const std::vector<int64_t> enc = c.encoder_dims(), dec = c.decoder_dims();
    for (size_t i = 0; i + 1 < c.dim_mult.size(); ++i) {
      const int64_t factor_t = c.temperal_downsample[i] ? 2 : 1;
      if (enc[i] * factor_t * 4 % enc[i + 1] != 0)
        fail("{}: encoder.down_blocks.{}: AvgDown3D from {} to {} channels needs {} x {} divisible by {}", path, i,
             enc[i], enc[i + 1], enc[i], factor_t * 4, enc[i + 1]);
      const int64_t up_t = c.temperal_downsample[c.temperal_downsample.size() - 1 - i] ? 2 : 1;
      if (dec[i + 1] * up_t * 4 % dec[i] != 0)
        fail("{}: decoder.up_blocks.{}: DupUp3D from {} to {} channels needs {} x {} divisible by {}", path, i, dec[i],
             dec[i + 1], dec[i + 1], up_t * 4, dec[i]);
    }
    if (enc[enc.size() - 2] % enc.back() != 0)
      fail("{}: encoder.down_blocks.{}: AvgDown3D from {} to {} channels needs the first divisible by the second", path,
           c.dim_mult.size() - 1, enc[enc.size() - 2], enc.back());
  }
  // The pipelines size latents by the scale factors: they must be what the layers do.
  if (c.scale_factor_spatial != c.spatial_compression())
    fail(
        "{}: scale_factor_spatial {} disagrees with the layers, which compress {}x (2 per level of dim_mult but the "
        "last, times patch_size)",
        path, c.scale_factor_spatial, c.spatial_compression());
  if (c.scale_factor_temporal != c.frames_per_latent())
    fail("{}: scale_factor_temporal {} disagrees with temperal_downsample, which compresses time {}x", path,
         c.scale_factor_temporal, c.frames_per_latent());
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

int64_t AutoencoderKLWanConfig::spatial_compression() const { return (int64_t{1} << (dim_mult.size() - 1)) * patch(); }

std::vector<int64_t> AutoencoderKLWanConfig::encoder_dims() const {
  std::vector<int64_t> dims{base_dim};
  for (int64_t u : dim_mult) dims.push_back(base_dim * u);
  return dims;
}

std::vector<int64_t> AutoencoderKLWanConfig::decoder_dims() const {
  std::vector<int64_t> dims{decoder_dim() * dim_mult.back()};
  for (auto it = dim_mult.rbegin(); it != dim_mult.rend(); ++it) dims.push_back(decoder_dim() * *it);
  return dims;
}

namespace {

// diffusers' _encode: the first frame alone, then chunks of 4 frames (a constant of its
// loop, not scale_factor_temporal).
constexpr int64_t kEncodeChunkFrames = 4;

// Whether diffusers' Wan2.1 encoder puts a WanAttentionBlock after some level's residual
// blocks (`scale in attn_scales`, scale 1, 1/2, 1/4... per level). It then calls that block
// with feat_cache, which it does not take: diffusers cannot encode with such a config.
bool encoder_has_attention(const AutoencoderKLWanConfig& c) {
  if (c.is_residual || c.num_res_blocks == 0) return false;
  double scale = 1.0;
  for (size_t i = 0; i < c.dim_mult.size(); ++i, scale /= 2.0) {
    for (double s : c.attn_scales)
      if (s == scale) return true;
  }
  return false;
}

// Chunks enter the convolutions in the layout they run in (see the top of this file).
Tensor in_conv_layout(const Tensor& x, Device device) {
  return nn::vae_channels_last(device) ? x.to_channels_last_3d() : x.contiguous();
}

}  // namespace

struct AutoencoderKLWan::Encoder {
  Encoder(const WanVaeLoad& load, const AutoencoderKLWanConfig& cfg)
      : encoder(load, cfg),
        quant_conv(load.causal_conv("quant_conv", 2 * cfg.z_dim, 2 * cfg.z_dim, {1, 1, 1}, {0, 0, 0})),
        cache_slots(load.slots) {}

  WanEncoder3d encoder;
  nn::CausalConv3d quant_conv;
  nn::FeatCacheSlots cache_slots;  // declared last: counted by the causal convs above while they load
};

struct AutoencoderKLWan::Decoder {
  Decoder(const WanVaeLoad& load, const AutoencoderKLWanConfig& cfg)
      : post_quant_conv(load.causal_conv("post_quant_conv", cfg.z_dim, cfg.z_dim, {1, 1, 1}, {0, 0, 0})),
        decoder(load, cfg),
        cache_slots(load.slots) {}

  nn::CausalConv3d post_quant_conv;
  WanDecoder3d decoder;
  nn::FeatCacheSlots cache_slots;  // declared last
};

AutoencoderKLWan::AutoencoderKLWan() = default;
AutoencoderKLWan::~AutoencoderKLWan() = default;

std::unique_ptr<AutoencoderKLWan> AutoencoderKLWan::from_pretrained(const std::string& dir, DType dtype, Device device,
                                                                    Parts parts) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!parts.encoder && !parts.decoder) fail("AutoencoderKLWan ({}): asked to load neither encoder nor decoder", dir);
  std::unique_ptr<AutoencoderKLWan> vae(new AutoencoderKLWan());
  vae->config_ = AutoencoderKLWanConfig::from_json(read_json_file(config_path), config_path);
  vae->dir_ = dir;
  vae->dtype_ = dtype;
  vae->device_ = device;
  if (parts.encoder && encoder_has_attention(vae->config_))
    fail(
        "{}: attn_scales {} puts attention blocks in the encoder's down blocks, which diffusers' WanEncoder3d "
        "cannot run (it passes them feat_cache); only scales no level has (e.g. []) are supported",
        config_path, fmt::join(vae->config_.attn_scales, ", "));
  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights weights(store, dtype, device);
  if (parts.encoder) {
    nn::FeatCacheSlots slots;
    vae->encoder_ = std::make_unique<Encoder>(WanVaeLoad{weights, nn::vae_channels_last(device), slots}, vae->config_);
  }
  if (parts.decoder) {
    nn::FeatCacheSlots slots;
    vae->decoder_ = std::make_unique<Decoder>(WanVaeLoad{weights, nn::vae_channels_last(device), slots}, vae->config_);
  }
  // The tensors of a part not loaded are legitimately left; any other leftover means the
  // config describes another model than the weights.
  weights.check_all_used(parts.encoder && parts.decoder ? "AutoencoderKLWan"
                         : parts.encoder                ? "the AutoencoderKLWan encoder"
                                                        : "the AutoencoderKLWan decoder",
                         config_path, [parts](const std::string& name) {
                           const bool encoder = name.starts_with("encoder.") || name.starts_with("quant_conv.");
                           const bool decoder = name.starts_with("decoder.") || name.starts_with("post_quant_conv.");
                           return (encoder && !parts.encoder) || (decoder && !parts.decoder);
                         });
  return vae;
}

Tensor AutoencoderKLWan::encode(const Tensor& video) const {
  if (!encoder_) fail("AutoencoderKLWan ({}): encode needs the encoder, which was not loaded (Parts::encoder)", dir_);
  const int64_t channels = config_.in_channels / (config_.patch() * config_.patch());
  const int64_t s = config_.spatial_compression();
  if (video.dim() != 5 || video.size(1) != channels || video.size(2) < 1 ||
      (video.size(2) - 1) % kEncodeChunkFrames != 0 || video.size(3) % s != 0 || video.size(4) % s != 0)
    fail("AutoencoderKLWan ({}): encode expects a video [B, {}, 1 + {}k, H, W] with H and W multiples of {}, got {}",
         dir_, channels, kEncodeChunkFrames, s, video.str());
  if (video.device() != device_)
    fail("AutoencoderKLWan ({}): the video is on {}, the model on {}", dir_, video.device().str(), device_.str());
  if (kEncodeChunkFrames % config_.frames_per_latent() != 0)
    fail(
        "AutoencoderKLWan ({}): temperal_downsample compresses time {}x, more than the {} frames the encoder takes "
        "per chunk",
        dir_, config_.frames_per_latent(), kEncodeChunkFrames);
  const int64_t chunks = 1 + (video.size(2) - 1) / kEncodeChunkFrames;
  const int64_t latent_frames = 1 + (chunks - 1) * (kEncodeChunkFrames / config_.frames_per_latent());
  Tensor latent = Tensor::empty({video.size(0), config_.z_dim, latent_frames, video.size(3) / s, video.size(4) / s},
                                dtype_, device_);
  // diffusers' _encode: the first frame alone, then 4 frames per encoder call, with the feature
  // cache carrying each causal conv's past. quant_conv is 1x1x1, so applying it per chunk is
  // its torch.cat + quant_conv; only the mode (mean, the first z_dim channels) is kept.
  nn::FeatCache cache(static_cast<size_t>(encoder_->cache_slots.count));
  int64_t frame = 0;
  for (int64_t i = 0; i < chunks; ++i) {
    const Tensor frames =
        i == 0 ? video.narrow(2, 0, 1) : video.narrow(2, 1 + kEncodeChunkFrames * (i - 1), kEncodeChunkFrames);
    const Tensor x = in_conv_layout(patchify(frames.to(dtype_), config_.patch()), device_);
    const Tensor h = encoder_->quant_conv.forward(encoder_->encoder.forward(x, cache), nullptr);
    VGEN_CHECK(frame + h.size(2) <= latent.size(2) && h.size(3) == latent.size(3) && h.size(4) == latent.size(4),
               "AutoencoderKLWan: encoder chunk {} gave {} for a latent of {}", i, h.str(), latent.str());
    latent.narrow(2, frame, h.size(2)).copy_(h.narrow(1, 0, config_.z_dim));
    frame += h.size(2);
  }
  VGEN_CHECK(frame == latent.size(2), "AutoencoderKLWan: encoded {} latent frames, expected {}", frame, latent.size(2));
  return latent;
}

void AutoencoderKLWan::set_decode_head_frames(int64_t frames) {
  VGEN_CHECK(frames >= 1, "AutoencoderKLWan: decode_head_frames must be at least 1, got {}", frames);
  decode_head_frames_ = frames;
}

void AutoencoderKLWan::set_decode_chunk_frames(int64_t frames) {
  if (frames < 1) fail("AutoencoderKLWan: vae_chunk_frames must be at least 1, got {}", frames);
  decode_chunk_frames_ = frames;
}

Tensor AutoencoderKLWan::decode(const Tensor& z, Communicator* split) const {
  if (!decoder_) fail("AutoencoderKLWan ({}): decode needs the decoder, which was not loaded (Parts::decoder)", dir_);
  if (z.dim() != 5 || z.size(1) != config_.z_dim || z.size(2) < 1)
    fail("AutoencoderKLWan ({}): decode expects z [B, {}, T >= 1, h, w], got {}", dir_, config_.z_dim, z.str());
  if (z.device() != device_)
    fail("AutoencoderKLWan ({}): z is on {}, the model on {}", dir_, z.device().str(), device_.str());
  if (split && split->size() > 1 && z.size(3) % split->size() == 0) {
    // Parallel decode: this rank's rows of the latent (post_quant_conv is per position).
    const int64_t h = z.size(3) / split->size();
    const nn::RowSplit rows(*split);
    return nn::gather_rows(decode(z.narrow(3, split->rank() * h, h), nullptr), *split);
  }
  const int64_t num_frame = z.size(2);
  const int64_t p = config_.patch(), s = config_.spatial_compression();
  Tensor x = decoder_->post_quant_conv.forward(z.to(dtype_), nullptr);
  Tensor video = Tensor::empty({z.size(0), config_.out_channels / (p * p),
                                1 + config_.frames_per_latent() * (num_frame - 1), z.size(3) * s, z.size(4) * s},
                               dtype_, device_);
  // diffusers' _decode: one latent frame per decoder call, the first with first_chunk. The
  // decoder's head (WanDecoder3d::head) takes up to decode_head_frames_ latent frames per call
  // instead and the rest (tail) up to decode_chunk_frames_ after the first, with the same
  // values frame by frame; a tail chunk does not cross a head's end. Chunks are clamped,
  // unpatchified and written in place of its torch.cat + unpatchify + final clamp (the same
  // values: both are per element / per frame).
  nn::FeatCache cache(static_cast<size_t>(decoder_->cache_slots.count));
  int64_t frame = 0;
  WanDecoder3d::Head head;
  for (int64_t i = 0, n = 1; i < num_frame; i += n) {
    const int64_t in_head = i % decode_head_frames_;
    if (in_head == 0) {
      Tensor chunk = x.narrow(2, i, std::min(decode_head_frames_, num_frame - i));
      if (nn::vae_channels_last(device_)) chunk = chunk.to_channels_last_3d();
      head = decoder_->decoder.head(chunk, cache);
    }
    n = i == 0 ? 1 : std::min({decode_chunk_frames_, num_frame - i, decode_head_frames_ - in_head});
    const Tensor out = ops::clamp(decoder_->decoder.tail(head.frames(in_head, n), cache, i == 0), -1.0f, 1.0f);
    VGEN_CHECK(
        frame + out.size(2) <= video.size(2) && out.size(3) * p == video.size(3) && out.size(4) * p == video.size(4),
        "AutoencoderKLWan: decoder chunk {} gave {} for an output of {}", i, out.str(), video.str());
    if (p == 1)
      video.narrow(2, frame, out.size(2)).copy_(out);
    else
      unpatchify_into(video, frame, out, p);
    frame += out.size(2);
  }
  VGEN_CHECK(frame == video.size(2), "AutoencoderKLWan: decoded {} frames, expected {}", frame, video.size(2));
  return video;
}

}  // namespace vgen
