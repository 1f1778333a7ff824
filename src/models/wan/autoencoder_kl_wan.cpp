// AutoencoderKLWan decode path: config, loading, the chunked decode loop. The decoder's
// blocks are in autoencoder_kl_wan_blocks.h, built from nn modules.
//
// On a GPU the decoder runs channels-last (activations and filters laid out [N, D, H, W, C]
// under their usual [N, C, D, H, W] shapes, as PyTorch's channels_last_3d): cuDNN's NDHWC
// convolutions are faster, and the channel norm reads contiguous rows. VGEN_VAE_CHANNELS_LAST=0
// keeps NCDHW (for comparison); the values are the same either way.
#include "models/wan/autoencoder_kl_wan.h"

#include <filesystem>
#include <optional>
#include <tuple>

#include "core/env.h"
#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "models/wan/autoencoder_kl_wan_blocks.h"
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

bool channels_last_on(Device device) {
  static const bool allowed = env_flag("VGEN_VAE_CHANNELS_LAST", true);
  return allowed && device.is_cuda();
}

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
  Modules(const WanVaeLoad& load, const AutoencoderKLWanConfig& cfg)
      : post_quant_conv(load.causal_conv("post_quant_conv", cfg.z_dim, cfg.z_dim, {1, 1, 1}, {0, 0, 0})),
        decoder(load, cfg),
        cache_slots(load.slots) {}

  nn::CausalConv3d post_quant_conv;
  WanDecoder3d decoder;
  nn::FeatCacheSlots cache_slots;  // declared last: counted by the causal convs above while they load
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
  const nn::Weights weights(store, dtype, device);
  nn::FeatCacheSlots slots;
  vae->modules_ = std::make_unique<Modules>(WanVaeLoad{weights, channels_last_on(device), slots}, vae->config_);
  // encoder.* and quant_conv.* are legitimately left; a decoder tensor left over means the
  // config describes another decoder than the weights.
  weights.check_all_used("the AutoencoderKLWan decoder", config_path, [](const std::string& name) {
    return !name.starts_with("decoder.") && !name.starts_with("post_quant_conv.");
  });
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
  nn::FeatCache cache(static_cast<size_t>(modules_->cache_slots.count));
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
