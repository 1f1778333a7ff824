#include "text/umt5_encoder.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen {
namespace {

int64_t positive_field(const Json& j, const char* key, int64_t fallback, const std::string& path) {
  const auto v = json_get<int64_t>(j, key, fallback, path);
  if (v <= 0) fail("{}: field '{}' must be positive, got {}", path, key, v);
  return v;
}

// x + y with torch's type promotion for the residual stream: float32 wins.
Tensor add_promoted(const Tensor& x, const Tensor& y) {
  return y.dtype() == DType::F32 && x.dtype() != DType::F32 ? ops::add(y, x) : ops::add(x, y);
}

}  // namespace

UMT5Config UMT5Config::from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  const std::string model_type = json_get<std::string>(j, "model_type", "umt5", path);
  if (model_type != "umt5")
    fail("{}: model_type is '{}', expected 'umt5' (UMT5EncoderModel: a relative attention bias in every layer)", path,
         model_type);
  UMT5Config c;
  c.vocab_size = positive_field(j, "vocab_size", c.vocab_size, path);
  c.d_model = positive_field(j, "d_model", c.d_model, path);
  c.d_kv = positive_field(j, "d_kv", c.d_kv, path);
  c.d_ff = positive_field(j, "d_ff", c.d_ff, path);
  c.num_layers = json_get<int64_t>(j, "num_layers", c.num_layers, path);
  if (c.num_layers < 0) fail("{}: field 'num_layers' must not be negative, got {}", path, c.num_layers);
  c.num_heads = positive_field(j, "num_heads", c.num_heads, path);
  c.relative_attention_num_buckets =
      positive_field(j, "relative_attention_num_buckets", c.relative_attention_num_buckets, path);
  // Bidirectional buckets: half per direction, half of those exact; both must be non-empty.
  if (c.relative_attention_num_buckets < 4)
    fail("{}: field 'relative_attention_num_buckets' must be at least 4, got {}", path,
         c.relative_attention_num_buckets);
  c.relative_attention_max_distance =
      positive_field(j, "relative_attention_max_distance", c.relative_attention_max_distance, path);
  if (c.relative_attention_max_distance <= c.relative_attention_num_buckets / 4)
    fail("{}: field 'relative_attention_max_distance' ({}) must exceed the {} exact buckets", path,
         c.relative_attention_max_distance, c.relative_attention_num_buckets / 4);
  c.layer_norm_epsilon = json_get<double>(j, "layer_norm_epsilon", c.layer_norm_epsilon, path);
  if (!(c.layer_norm_epsilon > 0.0 && c.layer_norm_epsilon < 1.0))
    fail("{}: field 'layer_norm_epsilon' must be in (0, 1), got {}", path, c.layer_norm_epsilon);

  c.feed_forward_proj = json_get<std::string>(j, "feed_forward_proj", c.feed_forward_proj, path);
  const size_t dash = c.feed_forward_proj.find('-');
  c.is_gated_act = dash != std::string::npos;
  if (c.is_gated_act &&
      (c.feed_forward_proj.substr(0, dash) != "gated" || c.feed_forward_proj.find('-', dash + 1) != std::string::npos))
    fail("{}: field 'feed_forward_proj' is \"{}\"; expected \"gated-ACT\" or \"ACT\"", path, c.feed_forward_proj);
  c.dense_act_fn = c.is_gated_act ? c.feed_forward_proj.substr(dash + 1) : c.feed_forward_proj;
  if (c.feed_forward_proj == "gated-gelu") c.dense_act_fn = "gelu_new";
  if (c.dense_act_fn != "gelu_new" && c.dense_act_fn != "gelu_pytorch_tanh" && c.dense_act_fn != "gelu" &&
      c.dense_act_fn != "relu" && c.dense_act_fn != "silu")
    fail("{}: field 'feed_forward_proj' is \"{}\"; activation '{}' is not supported (gelu_new, gelu, relu, silu)", path,
         c.feed_forward_proj, c.dense_act_fn);
  return c;
}

int64_t relative_position_bucket(int64_t relative_position, int64_t num_buckets, int64_t max_distance) {
  // transformers' UMT5Attention._relative_position_bucket with is_decoder=False; the log
  // branch in float32 like torch (float tensor op, double scalars rounded to float).
  const int64_t half = num_buckets / 2;
  const int64_t bucket = relative_position > 0 ? half : 0;
  const int64_t distance = std::abs(relative_position);
  const int64_t max_exact = half / 2;
  if (distance < max_exact) return bucket + distance;
  float log_ratio = std::log(static_cast<float>(distance) / static_cast<float>(max_exact)) /
                    static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
  log_ratio = log_ratio * static_cast<float>(half - max_exact);
  const int64_t large = max_exact + static_cast<int64_t>(log_ratio);
  return bucket + std::min(large, half - 1);
}

UMT5EncoderModel::UMT5EncoderModel(UMT5Config config, DType dtype, Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device) {}

std::unique_ptr<UMT5EncoderModel> UMT5EncoderModel::from_pretrained(const std::string& dir, DType dtype,
                                                                    Device device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  if (!std::filesystem::is_directory(dir)) fail("{}: text encoder folder not found", dir);
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto model = std::unique_ptr<UMT5EncoderModel>(
      new UMT5EncoderModel(UMT5Config::from_json(read_json_file(config_path), config_path), dtype, device));
  const UMT5Config& c = model->config_;
  const int64_t inner = c.num_heads * c.d_kv;

  const WeightStore store = WeightStore::open_dir(dir);
  auto load = [&](const std::string& name, const Shape& shape, DType as) {
    return store.load(name, shape, as, device);
  };

  // UMT5EncoderModel ties encoder.embed_tokens to shared; checkpoints store one or both.
  const bool has_shared = store.contains("shared.weight");
  if (!has_shared && !store.contains("encoder.embed_tokens.weight"))
    fail("{}: missing tensor 'shared.weight' (or its tied copy 'encoder.embed_tokens.weight')", dir);
  // The table stays in host memory: a forward needs only its prompts' rows (UMT5-XXL's is 2 GiB
  // of bf16 that the GPU then never holds).
  model->shared_ = store.load(has_shared ? "shared.weight" : "encoder.embed_tokens.weight", {c.vocab_size, c.d_model},
                              dtype, Device::cpu());
  if (has_shared && store.contains("encoder.embed_tokens.weight")) store.get("encoder.embed_tokens.weight");

  model->blocks_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "encoder.block." + std::to_string(i) + ".layer.";
    Block& b = model->blocks_[static_cast<size_t>(i)];
    b.q = load(p + "0.SelfAttention.q.weight", {inner, c.d_model}, dtype);
    b.k = load(p + "0.SelfAttention.k.weight", {inner, c.d_model}, dtype);
    b.v = load(p + "0.SelfAttention.v.weight", {inner, c.d_model}, dtype);
    b.o = load(p + "0.SelfAttention.o.weight", {c.d_model, inner}, dtype);
    b.relative_attention_bias = load(p + "0.SelfAttention.relative_attention_bias.weight",
                                     {c.relative_attention_num_buckets, c.num_heads}, DType::F32);
    b.attention_norm = load(p + "0.layer_norm.weight", {c.d_model}, dtype);
    if (c.is_gated_act) {
      b.wi_0 = load(p + "1.DenseReluDense.wi_0.weight", {c.d_ff, c.d_model}, dtype);
      b.wi_1 = load(p + "1.DenseReluDense.wi_1.weight", {c.d_ff, c.d_model}, dtype);
    } else {
      b.wi_0 = load(p + "1.DenseReluDense.wi.weight", {c.d_ff, c.d_model}, dtype);
    }
    b.wo = load(p + "1.DenseReluDense.wo.weight", {c.d_model, c.d_ff}, dtype == DType::F16 ? DType::F32 : dtype);
    b.ffn_norm = load(p + "1.layer_norm.weight", {c.d_model}, dtype);
  }
  model->final_layer_norm_ = load("encoder.final_layer_norm.weight", {c.d_model}, dtype);

  const std::vector<std::string> unused = store.unused();
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 8; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
    if (unused.size() > 8) list += fmt::format(" and {} more", unused.size() - 8);
    fail("{}: {} tensor(s) in the checkpoint are not used by UMT5EncoderModel as configured by {}: {}", dir,
         unused.size(), config_path, list);
  }
  return model;
}

Tensor UMT5EncoderModel::norm(const Tensor& x, const Tensor& weight) const {
  // UMT5LayerNorm: float32 statistics, no mean subtraction; the result in the weight's dtype.
  Tensor y = ops::rms_norm(x, weight, static_cast<float>(config_.layer_norm_epsilon));
  return y.dtype() == weight.dtype() ? y : y.to(weight.dtype());
}

Tensor UMT5EncoderModel::self_attention(const Block& block, const Tensor& x, const Tensor& bucket_ids,
                                        const Tensor& mask_bias) const {
  const int64_t B = x.size(0), L = x.size(1), H = config_.num_heads, D = config_.d_kv;
  auto heads = [&](const Tensor& w) { return ops::linear(x, w).view({B, L, H, D}).permute({0, 2, 1, 3}); };
  // position_bias [1, H, L, L] from this layer's bucket table, plus the padding mask [B, 1, 1, L].
  const Tensor position_bias =
      ops::embedding(bucket_ids, block.relative_attention_bias).permute({2, 0, 1}).unsqueeze(0);
  const Tensor bias = ops::add(position_bias, mask_bias);
  // UMT5 folds the scale into its initialization: scores are plain q.k.
  const Tensor out = ops::attention(heads(block.q), heads(block.k), heads(block.v), bias, 1.0f);
  return ops::linear(out.permute({0, 2, 1, 3}).reshape({B, L, H * D}), block.o);
}

Tensor UMT5EncoderModel::feed_forward(const Block& block, const Tensor& x) const {
  const std::string& act = config_.dense_act_fn;
  const Activation fused = act == "gelu"   ? Activation::Gelu
                           : act == "silu" ? Activation::Silu
                           : act == "relu" ? Activation::None
                                           : Activation::GeluTanh;  // gelu_new, gelu_pytorch_tanh
  Tensor h = ops::linear(x, block.wi_0, {}, fused);
  if (act == "relu") h = ops::clamp(h, 0.0f, INFINITY);
  if (block.wi_1.defined()) h = ops::mul(h, ops::linear(x, block.wi_1));
  // transformers casts to wo's dtype (float32 under float16) before the projection.
  if (h.dtype() != block.wo.dtype()) h = h.to(block.wo.dtype());
  return ops::linear(h, block.wo);
}

Tensor UMT5EncoderModel::forward(const Tensor& input_ids, const Tensor& attention_mask) const {
  VGEN_CHECK(input_ids.dtype() == DType::I64 && input_ids.dim() == 2,
             "UMT5EncoderModel: input_ids {} must be I64 [B, L]", input_ids.str());
  VGEN_CHECK(attention_mask.shape() == input_ids.shape(),
             "UMT5EncoderModel: attention_mask {} does not match input_ids {}", attention_mask.str(), input_ids.str());
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  const int64_t nb = config_.relative_attention_num_buckets, md = config_.relative_attention_max_distance;

  // Bucket of (key - query) for every pair; shared by all layers, each with its own table.
  std::vector<int64_t> buckets(static_cast<size_t>(L * L));
  for (int64_t q = 0; q < L; ++q)
    for (int64_t k = 0; k < L; ++k) buckets[q * L + k] = relative_position_bucket(k - q, nb, md);
  const Tensor bucket_ids = Tensor::from_vector_i64(buckets, {L, L}).to(device_);

  // Masked keys: transformers' additive mask value, torch.finfo(float32).min.
  const std::vector<float> mask = attention_mask.to(Device::cpu()).to(DType::F32).to_vector();
  std::vector<float> mask_values(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) mask_values[i] = mask[i] != 0.0f ? 0.0f : -FLT_MAX;
  const Tensor mask_bias = Tensor::from_vector(mask_values, {B, 1, 1, L}).to(device_);

  Tensor h = ops::embedding(input_ids.to(Device::cpu()), shared_).to(device_);
  for (const Block& block : blocks_) {
    h = add_promoted(h, self_attention(block, norm(h, block.attention_norm), bucket_ids, mask_bias));
    h = add_promoted(h, feed_forward(block, norm(h, block.ffn_norm)));
  }
  return norm(h, final_layer_norm_);
}

Tensor zero_padded_positions(const Tensor& hidden, const std::vector<int64_t>& lengths) {
  VGEN_CHECK(hidden.dim() == 3 && hidden.size(0) == static_cast<int64_t>(lengths.size()),
             "zero_padded_positions: hidden {} for {} lengths", hidden.str(), lengths.size());
  Tensor out = Tensor::zeros(hidden.shape(), hidden.dtype(), hidden.device());
  for (int64_t b = 0; b < hidden.size(0); ++b) {
    const int64_t n = lengths[static_cast<size_t>(b)];
    VGEN_CHECK(n >= 0 && n <= hidden.size(1), "zero_padded_positions: length {} of item {} outside [0, {}]", n, b,
               hidden.size(1));
    if (n > 0) out.select(0, b).narrow(0, 0, n).copy_(hidden.select(0, b).narrow(0, 0, n));
  }
  return out;
}

}  // namespace vgen
