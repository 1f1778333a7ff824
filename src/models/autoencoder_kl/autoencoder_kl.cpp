#include "models/autoencoder_kl/autoencoder_kl.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/weights.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "AutoencoderKL";
constexpr float kEps = 1e-6f;  // resnet_eps, the attention's group norm and conv_norm_out

void require_types(const ConfigReader& r, const Json& j, const std::string& key, const std::string& want) {
  if (!j.contains(key)) return;
  for (const std::string& t : r.string_list(key))
    if (t != want) r.fail_value(key, fmt::format("lists '{}'; only {} is supported", t, want));
}

}  // namespace

AutoencoderKLConfig AutoencoderKLConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path);
  const std::string class_name = r.string("_class_name", kClassName);
  if (class_name != kClassName) fail("{}: _class_name is '{}', expected '{}'", path, class_name, kClassName);
  AutoencoderKLConfig c;
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  c.out_channels = r.integer("out_channels", c.out_channels, 1);
  c.block_out_channels = r.integer_list("block_out_channels", c.block_out_channels);
  c.layers_per_block = r.integer("layers_per_block", c.layers_per_block, 1);
  c.latent_channels = r.integer("latent_channels", c.latent_channels, 1);
  c.norm_num_groups = r.integer("norm_num_groups", c.norm_num_groups, 1);
  c.scaling_factor = r.number("scaling_factor", c.scaling_factor);
  c.shift_factor = r.optional_number("shift_factor");
  c.use_quant_conv = r.boolean("use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = r.boolean("use_post_quant_conv", c.use_post_quant_conv);
  c.mid_block_add_attention = r.boolean("mid_block_add_attention", c.mid_block_add_attention);
  const std::string act = r.string("act_fn", "silu");
  if (act != "silu") r.fail_value("act_fn", fmt::format("is '{}'; only 'silu' is supported", act));
  require_types(r, j, "down_block_types", "DownEncoderBlock2D");
  require_types(r, j, "up_block_types", "UpDecoderBlock2D");
  if (j.contains("down_block_types") && r.string_list("down_block_types").size() != c.block_out_channels.size())
    r.fail_value("down_block_types", "must have one entry per block_out_channels");
  if (c.block_out_channels.empty()) r.fail_value("block_out_channels", "must not be empty");
  for (const int64_t ch : c.block_out_channels)
    if (ch <= 0 || ch % c.norm_num_groups != 0)
      r.fail_value("block_out_channels",
                   fmt::format("{} is not a positive multiple of norm_num_groups {}", ch, c.norm_num_groups));
  if (!(c.scaling_factor > 0)) r.fail_value("scaling_factor", "must be positive");
  return c;
}

AutoencoderKL::AutoencoderKL(AutoencoderKLConfig config, DType dtype, Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device), channels_last_(nn::vae_channels_last(device)) {}

Tensor AutoencoderKL::GroupNorm::forward(const Tensor& x, bool silu) const {
  // torch.nn.GroupNorm (and the nonlinearity after it), in x's layout.
  return ops::group_norm(x, weight, bias, groups, eps, silu ? Activation::Silu : Activation::None);
}

Tensor AutoencoderKL::Resnet::forward(const Tensor& x) const {
  // ResnetBlock2D (no temb, output_scale_factor 1): norm1, silu, conv1, norm2, silu, conv2, + shortcut.
  // The shortcut is added to conv2's result by the convolution op (ops::conv3d).
  const Tensor shortcut = conv_shortcut ? conv_shortcut->forward(x) : x;
  const Tensor h = conv1->forward(norm1.forward(x, true));
  return conv2->forward(norm2.forward(h, true), shortcut);
}

Tensor AutoencoderKL::MidBlock::forward(const Tensor& x) const {
  Tensor h = resnet0.forward(x);
  if (attention) {
    // Attention(heads=1, dim_head=C, norm_num_groups, residual_connection): over the H*W tokens.
    const int64_t B = h.size(0), C = h.size(1), HW = h.numel() / (B * C);
    const Tensor norm = group_norm.forward(h, false);
    // [B, HW, C] tokens: the memory of a channels-last [B, C, 1, H, W] already is that.
    const bool channels_last = norm.is_channels_last_3d();
    const Tensor tokens = channels_last ? norm.permute({0, 2, 3, 4, 1}).reshape({B, HW, C})
                                        : norm.reshape({B, C, HW}).permute({0, 2, 1}).contiguous();
    const Tensor qkv = to_qkv.forward(tokens).view({B, HW, 3, 1, C});
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(C)));
    const Tensor attn = nn::scaled_dot_product_attention(qkv.select(2, 0), qkv.select(2, 1), qkv.select(2, 2), {},
                                                         scale);
    const Tensor proj = to_out.forward(attn);  // [B, HW, C], back in h's layout:
    const Tensor out = channels_last
                           ? proj.view({B, h.size(2), h.size(3), h.size(4), C}).permute({0, 4, 1, 2, 3})
                           : proj.permute({0, 2, 1}).contiguous().view(h.shape());
    h = ops::add(out, h);
  }
  return resnet1.forward(h);
}

std::unique_ptr<nn::Conv3d> AutoencoderKL::conv(const nn::Weights& w, const std::string& prefix, int64_t in,
                                                int64_t out, int64_t kernel, int64_t stride) const {
  // Downsample2D pads (0, 1, 0, 1) itself and convolves without padding; the others pad k / 2.
  const int64_t pad = stride == 1 ? kernel / 2 : 0;
  return std::make_unique<nn::Conv3d>(nn::Conv3d::per_frame_conv2d(w, prefix, in, out, {kernel, kernel}, {pad, pad},
                                                                    channels_last_, {stride, stride}));
}

AutoencoderKL::GroupNorm AutoencoderKL::group_norm(const nn::Weights& w, const std::string& prefix,
                                                   int64_t channels) const {
  GroupNorm g;
  g.weight = w.load(prefix + ".weight", {channels});
  g.bias = w.load(prefix + ".bias", {channels});
  g.groups = config_.norm_num_groups;
  g.eps = kEps;
  return g;
}

AutoencoderKL::Resnet AutoencoderKL::resnet(const nn::Weights& w, const std::string& prefix, int64_t in,
                                            int64_t out) const {
  Resnet r;
  r.norm1 = group_norm(w, prefix + ".norm1", in);
  r.conv1 = conv(w, prefix + ".conv1", in, out, 3);
  r.norm2 = group_norm(w, prefix + ".norm2", out);
  r.conv2 = conv(w, prefix + ".conv2", out, out, 3);
  if (in != out) r.conv_shortcut = conv(w, prefix + ".conv_shortcut", in, out, 1);
  return r;
}

AutoencoderKL::MidBlock AutoencoderKL::mid_block(const nn::Weights& w, const std::string& prefix,
                                                 int64_t channels) const {
  MidBlock m;
  m.resnet0 = resnet(w, prefix + ".resnets.0", channels, channels);
  m.resnet1 = resnet(w, prefix + ".resnets.1", channels, channels);
  m.attention = config_.mid_block_add_attention;
  if (m.attention) {
    const std::string a = prefix + ".attentions.0.";
    m.group_norm = group_norm(w, a + "group_norm", channels);
    m.to_qkv = nn::Linear::fused(w, {a + "to_q", a + "to_k", a + "to_v"}, channels, channels);
    m.to_out = nn::Linear(w, a + "to_out.0", channels, channels);
  }
  return m;
}

std::unique_ptr<AutoencoderKL> AutoencoderKL::from_pretrained(const std::string& dir, DType dtype, Device device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto vae = std::unique_ptr<AutoencoderKL>(
      new AutoencoderKL(AutoencoderKLConfig::from_json(read_json_file(config_path), config_path), dtype, device));
  const AutoencoderKLConfig& c = vae->config_;
  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights w(store, dtype, device);
  const std::vector<int64_t>& ch = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(ch.size()), L = c.latent_channels;

  vae->enc_conv_in_ = vae->conv(w, "encoder.conv_in", c.in_channels, ch[0], 3);
  int64_t prev = ch[0];
  for (int64_t i = 0; i < n; ++i) {
    Stage s;
    const std::string p = fmt::format("encoder.down_blocks.{}", i);
    for (int64_t j = 0; j < c.layers_per_block; ++j) {
      s.resnets.push_back(vae->resnet(w, fmt::format("{}.resnets.{}", p, j), j == 0 ? prev : ch[i], ch[i]));
    }
    if (i != n - 1) s.resample = vae->conv(w, p + ".downsamplers.0.conv", ch[i], ch[i], 3, 2);
    prev = ch[i];
    vae->down_blocks_.push_back(std::move(s));
  }
  vae->enc_mid_ = vae->mid_block(w, "encoder.mid_block", ch.back());
  vae->enc_norm_out_ = vae->group_norm(w, "encoder.conv_norm_out", ch.back());
  vae->enc_conv_out_ = vae->conv(w, "encoder.conv_out", ch.back(), 2 * L, 3);
  if (c.use_quant_conv) vae->quant_conv_ = vae->conv(w, "quant_conv", 2 * L, 2 * L, 1);

  if (c.use_post_quant_conv) vae->post_quant_conv_ = vae->conv(w, "post_quant_conv", L, L, 1);
  vae->dec_conv_in_ = vae->conv(w, "decoder.conv_in", L, ch.back(), 3);
  vae->dec_mid_ = vae->mid_block(w, "decoder.mid_block", ch.back());
  prev = ch.back();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t out = ch[static_cast<size_t>(n - 1 - i)];
    Stage s;
    const std::string p = fmt::format("decoder.up_blocks.{}", i);
    for (int64_t j = 0; j < c.layers_per_block + 1; ++j)
      s.resnets.push_back(vae->resnet(w, fmt::format("{}.resnets.{}", p, j), j == 0 ? prev : out, out));
    if (i != n - 1)
      s.upsample = std::make_unique<nn::UpsampleConv2d>(w, p + ".upsamplers.0.conv", out, out, vae->channels_last_);
    prev = out;
    vae->up_blocks_.push_back(std::move(s));
  }
  vae->dec_norm_out_ = vae->group_norm(w, "decoder.conv_norm_out", ch[0]);
  vae->dec_conv_out_ = vae->conv(w, "decoder.conv_out", ch[0], c.out_channels, 3);
  w.check_all_used(kClassName, config_path);
  return vae;
}

AutoencoderKL::LatentDist AutoencoderKL::encode(const Tensor& image) const {
  const int64_t f = config_.scale_factor();
  VGEN_CHECK(image.dim() == 4 && image.size(1) == config_.in_channels && image.size(2) % f == 0 &&
                 image.size(3) % f == 0,
             "{}: image {} must be [batch, {} channels, height, width] with height and width multiples of {}",
             kClassName, image.str(), config_.in_channels, f);
  Tensor x = image.to(device_).to(dtype_).unsqueeze(2);  // [B, C, 1, H, W]
  x = enc_conv_in_->forward(in_conv_layout(x));
  for (const Stage& s : down_blocks_) {
    for (const Resnet& r : s.resnets) x = r.forward(x);
    if (s.resample) x = s.resample->forward(ops::pad(ops::pad(x, 4, 0, 1), 3, 0, 1));  // Downsample2D's F.pad
  }
  x = enc_mid_.forward(x);
  x = enc_conv_out_->forward(enc_norm_out_.forward(x, true));
  if (quant_conv_) x = quant_conv_->forward(x);
  x = x.squeeze(2);  // the halves below are NCHW copies
  const int64_t L = config_.latent_channels;
  return {x.narrow(1, 0, L).contiguous(), ops::clamp(x.narrow(1, L, L).contiguous(), -30.0f, 20.0f)};
}

Tensor AutoencoderKL::decode(const Tensor& z) const {
  VGEN_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels,
             "{}: latents {} must be [batch, {} channels, height, width]", kClassName, z.str(),
             config_.latent_channels);
  Tensor x = in_conv_layout(z.to(device_).to(dtype_).unsqueeze(2));
  if (post_quant_conv_) x = post_quant_conv_->forward(x);
  x = dec_conv_in_->forward(x);
  x = dec_mid_.forward(x);
  for (const Stage& s : up_blocks_) {
    for (const Resnet& r : s.resnets) x = r.forward(x);
    if (s.upsample) x = s.upsample->forward(x);
  }
  x = dec_conv_out_->forward(dec_norm_out_.forward(x, true));
  return x.squeeze(2).contiguous();  // NCHW whatever the layout inside
}

Tensor AutoencoderKL::in_conv_layout(const Tensor& x) const {
  return channels_last_ ? x.to_channels_last_3d() : x;
}

}  // namespace vgen
