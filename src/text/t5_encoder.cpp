#include "text/t5_encoder.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen {
namespace {

// x + y with torch's type promotion for the residual stream: float32 wins.
Tensor add_promoted(const Tensor& x, const Tensor& y) {
  return y.dtype() == DType::F32 && x.dtype() != DType::F32 ? ops::add(y, x) : ops::add(x, y);
}

}  // namespace

T5Config T5Config::from_json(const Json& j, const std::string& path, const std::string& expected_model_type) {
  const ConfigReader r(j, path);
  const std::string model_type = r.string("model_type", expected_model_type);
  if (model_type != expected_model_type)
    fail("{}: model_type is '{}', expected '{}' ({})", path, model_type, expected_model_type,
         expected_model_type == "umt5" ? "UMT5EncoderModel: a relative attention bias in every layer"
                                       : "T5EncoderModel: one relative attention bias, in the first layer");
  T5Config c;
  c.model_type = model_type;
  if (model_type == "umt5") {  // UMT5Config's defaults where they differ from T5Config's
    c.vocab_size = 250112;
    c.d_ff = 1024;
    c.num_layers = 8;
    c.num_heads = 6;
    c.feed_forward_proj = "gated-gelu";
  }
  c.vocab_size = r.integer("vocab_size", c.vocab_size, 1);
  c.d_model = r.integer("d_model", c.d_model, 1);
  c.d_kv = r.integer("d_kv", c.d_kv, 1);
  c.d_ff = r.integer("d_ff", c.d_ff, 1);
  c.num_layers = r.integer("num_layers", c.num_layers, 0);
  c.num_heads = r.integer("num_heads", c.num_heads, 1);
  // Bidirectional buckets: half per direction, half of those exact; both must be non-empty.
  c.relative_attention_num_buckets = r.integer("relative_attention_num_buckets", c.relative_attention_num_buckets, 4);
  c.relative_attention_max_distance = r.integer("relative_attention_max_distance", c.relative_attention_max_distance, 1);
  if (c.relative_attention_max_distance <= c.relative_attention_num_buckets / 4)
    r.fail_value("relative_attention_max_distance", fmt::format("({}) must exceed the {} exact buckets",
                                                                c.relative_attention_max_distance,
                                                                c.relative_attention_num_buckets / 4));
  c.layer_norm_epsilon = r.number("layer_norm_epsilon", c.layer_norm_epsilon);
  if (!(c.layer_norm_epsilon > 0.0 && c.layer_norm_epsilon < 1.0))
    r.fail_value("layer_norm_epsilon", fmt::format("must be in (0, 1), got {}", c.layer_norm_epsilon));

  c.feed_forward_proj = r.string("feed_forward_proj", c.feed_forward_proj);
  const size_t dash = c.feed_forward_proj.find('-');
  c.is_gated_act = dash != std::string::npos;
  if (c.is_gated_act &&
      (c.feed_forward_proj.substr(0, dash) != "gated" || c.feed_forward_proj.find('-', dash + 1) != std::string::npos))
    r.fail_value("feed_forward_proj", fmt::format("is \"{}\"; expected \"gated-ACT\" or \"ACT\"", c.feed_forward_proj));
  c.dense_act_fn = c.is_gated_act ? c.feed_forward_proj.substr(dash + 1) : c.feed_forward_proj;
  if (c.feed_forward_proj == "gated-gelu") c.dense_act_fn = "gelu_new";
  if (c.dense_act_fn != "gelu_new" && c.dense_act_fn != "gelu_pytorch_tanh" && c.dense_act_fn != "gelu" &&
      c.dense_act_fn != "relu" && c.dense_act_fn != "silu")
    r.fail_value("feed_forward_proj", fmt::format("is \"{}\"; activation '{}' is not supported (gelu_new, gelu, relu, silu)",
                                                  c.feed_forward_proj, c.dense_act_fn));
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

namespace {

// T5 attention: projections q, k, v, o without biases; the scale folded into the
// initialization, so scores are plain q.k.
nn::AttentionOptions t5_attention_options(const T5Config& c) {
  nn::AttentionOptions o;
  o.query_dim = c.d_model;
  o.heads = c.num_heads;
  o.dim_head = c.d_kv;
  o.bias = false;
  o.scale = 1.0f;
  o.to_q = "q";
  o.to_k = "k";
  o.to_v = "v";
  o.to_out = "o";
  return o;
}

}  // namespace

T5EncoderModel::Block::Block(const nn::Weights& weights, const std::string& p, const T5Config& c,
                             bool has_relative_bias)
    : attention_norm(weights, p + "0.layer_norm", c.d_model, static_cast<float>(c.layer_norm_epsilon)),
      self_attention(weights, p + "0.SelfAttention", t5_attention_options(c)),
      relative_attention_bias(has_relative_bias ? weights.as(DType::F32).load(
                                                      p + "0.SelfAttention.relative_attention_bias.weight",
                                                      {c.relative_attention_num_buckets, c.num_heads})
                                                : Tensor()),
      ffn_norm(weights, p + "1.layer_norm", c.d_model, static_cast<float>(c.layer_norm_epsilon)),
      wi_0(weights, p + (c.is_gated_act ? "1.DenseReluDense.wi_0" : "1.DenseReluDense.wi"), c.d_model, c.d_ff, false),
      wi_1(c.is_gated_act ? nn::Linear(weights, p + "1.DenseReluDense.wi_1", c.d_model, c.d_ff, false) : nn::Linear()),
      // transformers keeps wo in float32 under float16 (`_keep_in_fp32_modules`).
      wo(weights.as(weights.dtype() == DType::F16 ? DType::F32 : weights.dtype()), p + "1.DenseReluDense.wo", c.d_ff,
         c.d_model, false) {}

T5EncoderModel::T5EncoderModel(const std::string& dir, const std::string& model_type, DType dtype, Device device)
    : dtype_(dtype), device_(device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  if (!std::filesystem::is_directory(dir)) fail("{}: text encoder folder not found", dir);
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  config_ = T5Config::from_json(read_json_file(config_path), config_path, model_type);
  const T5Config& c = config_;

  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights weights(store, dtype, device);

  // The encoder ties encoder.embed_tokens to shared; checkpoints store one or both.
  const bool has_shared = store.contains("shared.weight");
  if (!has_shared && !store.contains("encoder.embed_tokens.weight"))
    fail("{}: missing tensor 'shared.weight' (or its tied copy 'encoder.embed_tokens.weight')", dir);
  // The table stays in host memory: a forward needs only its prompts' rows (UMT5-XXL's is 2 GiB
  // of bf16 that the GPU then never holds).
  shared_ = store.load(has_shared ? "shared.weight" : "encoder.embed_tokens.weight", {c.vocab_size, c.d_model}, dtype,
                       Device::cpu());
  if (has_shared && store.contains("encoder.embed_tokens.weight")) store.get("encoder.embed_tokens.weight");

  blocks_.reserve(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i)
    blocks_.emplace_back(weights, fmt::format("encoder.block.{}.layer.", i), c,
                         c.relative_bias_per_layer() || i == 0);
  final_layer_norm_ =
      nn::RMSNorm(weights, "encoder.final_layer_norm", c.d_model, static_cast<float>(c.layer_norm_epsilon));
  weights.check_all_used(model_type == "umt5" ? "UMT5EncoderModel" : "T5EncoderModel", config_path);
}

std::unique_ptr<T5EncoderModel> T5EncoderModel::from_pretrained(const std::string& dir, DType dtype, Device device) {
  return std::unique_ptr<T5EncoderModel>(new T5EncoderModel(dir, "t5", dtype, device));
}

Tensor T5EncoderModel::position_bias(const Block& block, const Tensor& bucket_ids) const {
  // [L, L, H] rows of the block's bucket table -> [1, H, L, L].
  return ops::embedding(bucket_ids, block.relative_attention_bias).permute({2, 0, 1}).unsqueeze(0);
}

Tensor T5EncoderModel::feed_forward(const Block& block, const Tensor& x) const {
  const std::string& act = config_.dense_act_fn;
  const Activation fused = act == "gelu"   ? Activation::Gelu
                           : act == "silu" ? Activation::Silu
                           : act == "relu" ? Activation::None
                                           : Activation::GeluTanh;  // gelu_new, gelu_pytorch_tanh
  Tensor h = block.wi_0.forward(x, fused);
  if (act == "relu") h = ops::clamp(h, 0.0f, INFINITY);
  if (block.wi_1.defined()) h = ops::mul(h, block.wi_1.forward(x));
  // transformers casts to wo's dtype (float32 under float16) before the projection.
  if (h.dtype() != block.wo.weight().dtype()) h = h.to(block.wo.weight().dtype());
  return block.wo.forward(h);
}

Tensor T5EncoderModel::forward(const Tensor& input_ids, const Tensor& attention_mask) const {
  VGEN_CHECK(input_ids.dtype() == DType::I64 && input_ids.dim() == 2,
             "T5EncoderModel: input_ids {} must be I64 [B, L]", input_ids.str());
  VGEN_CHECK(!attention_mask.defined() || attention_mask.shape() == input_ids.shape(),
             "T5EncoderModel: attention_mask {} does not match input_ids {}", attention_mask.str(), input_ids.str());
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  const int64_t nb = config_.relative_attention_num_buckets, md = config_.relative_attention_max_distance;

  // Bucket of (key - query) for every pair, the same for every block.
  std::vector<int64_t> buckets(static_cast<size_t>(L * L));
  for (int64_t q = 0; q < L; ++q)
    for (int64_t k = 0; k < L; ++k) buckets[q * L + k] = relative_position_bucket(k - q, nb, md);
  const Tensor bucket_ids = Tensor::from_vector_i64(buckets, {L, L}).to(device_);

  // Masked keys: transformers' additive mask value, torch.finfo(float32).min.
  Tensor mask_bias;
  if (attention_mask.defined()) {
    const std::vector<float> mask = attention_mask.to(Device::cpu()).to(DType::F32).to_vector();
    std::vector<float> mask_values(mask.size());
    for (size_t i = 0; i < mask.size(); ++i) mask_values[i] = mask[i] != 0.0f ? 0.0f : -FLT_MAX;
    mask_bias = Tensor::from_vector(mask_values, {B, 1, 1, L}).to(device_);
  }
  // position bias [1, H, L, L] (+ mask [B, 1, 1, L]): T5 computes it in block 0 and hands it on.
  const auto scores_bias = [&](const Block& block) {
    const Tensor bias = position_bias(block, bucket_ids);
    return mask_bias.defined() ? ops::add(bias, mask_bias) : bias;
  };
  Tensor shared_bias;

  Tensor h = ops::embedding(input_ids.to(Device::cpu()), shared_).to(device_);
  for (const Block& block : blocks_) {
    if (block.relative_attention_bias.defined()) shared_bias = scores_bias(block);
    h = add_promoted(h, block.self_attention.forward(block.attention_norm.forward(h), nullptr, shared_bias));
    h = add_promoted(h, feed_forward(block, block.ffn_norm.forward(h)));
  }
  return final_layer_norm_.forward(h);
}

}  // namespace vgen
