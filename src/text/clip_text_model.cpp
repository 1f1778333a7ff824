#include "text/clip_text_model.h"

#include <algorithm>
#include <cfloat>
#include <filesystem>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "CLIPTextModel";

}  // namespace

CLIPTextConfig CLIPTextConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader top(j, path);
  const std::string model_type = top.string("model_type", "clip_text_model");
  // A CLIPConfig (model_type "clip") holds the text model's fields under text_config.
  if (model_type == "clip" && j.contains("text_config")) return from_json(j.at("text_config"), path + ": text_config");
  if (model_type != "clip_text_model")
    top.fail_value("model_type", fmt::format("is \"{}\", expected \"clip_text_model\" (FLUX.1's text_encoder is a "
                                             "CLIPTextModel)",
                                             model_type));
  const ConfigReader& r = top;
  CLIPTextConfig c;
  c.vocab_size = r.integer("vocab_size", c.vocab_size, 1);
  c.read_encoder_fields(r);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers, 0);
  c.max_position_embeddings = r.integer("max_position_embeddings", c.max_position_embeddings, 1);
  c.eos_token_id = r.integer("eos_token_id", c.eos_token_id, 0);
  return c;
}

CLIPTextModel::CLIPTextModel(CLIPTextConfig config, DType dtype, Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device) {}

std::unique_ptr<CLIPTextModel> CLIPTextModel::from_pretrained(const std::string& dir, DType dtype, Device device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  if (!std::filesystem::is_directory(dir)) fail("{}: text encoder folder not found", dir);
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto model = std::unique_ptr<CLIPTextModel>(
      new CLIPTextModel(CLIPTextConfig::from_json(read_json_file(config_path), config_path), dtype, device));
  const CLIPTextConfig& c = model->config_;

  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights weights(store, dtype, device);
  // transformers 5 saves CLIPTextModel's modules at the top; earlier versions (the FLUX.1
  // repos) under "text_model.".
  const std::string prefix = store.contains("text_model.embeddings.token_embedding.weight") ? "text_model." : "";
  // The token table stays in host memory: a forward gathers its prompts' rows there.
  model->token_embedding_ =
      store.load(prefix + "embeddings.token_embedding.weight", {c.vocab_size, c.hidden_size}, dtype, Device::cpu());
  model->position_embedding_ =
      weights.load(prefix + "embeddings.position_embedding.weight", {c.max_position_embeddings, c.hidden_size});
  model->encoder_ = CLIPEncoder(weights, prefix + "encoder.", c, c.num_hidden_layers);
  model->final_layer_norm_ =
      nn::LayerNorm(weights, prefix + "final_layer_norm", c.hidden_size, static_cast<float>(c.layer_norm_eps));
  // The position_ids buffer that transformers before 4.31 saved is not a weight.
  weights.check_all_used(kClassName, config_path,
                         [&](const std::string& name) { return name == prefix + "embeddings.position_ids"; });
  return model;
}

CLIPTextModelOutput CLIPTextModel::forward(const Tensor& input_ids, const Tensor& attention_mask) const {
  const CLIPTextConfig& c = config_;
  VGEN_CHECK(input_ids.dtype() == DType::I64 && input_ids.dim() == 2 && input_ids.size(1) >= 1,
             "{}: input_ids {} must be I64 [B, L] with L >= 1", kClassName, input_ids.str());
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  VGEN_CHECK(L <= c.max_position_embeddings, "{}: sequence length {} exceeds max_position_embeddings ({})", kClassName,
             L, c.max_position_embeddings);
  VGEN_CHECK(!attention_mask.defined() || attention_mask.shape() == input_ids.shape(),
             "{}: attention_mask {} does not match input_ids {}", kClassName, attention_mask.str(), input_ids.str());

  // Causal mask (and padding keys when a mask is given) as one additive bias [B or 1, 1, L, L]:
  // float32's lowest value where masked, as transformers' eager path; a fully masked row then
  // attends uniformly there too.
  std::vector<float> keep;
  if (attention_mask.defined()) keep = attention_mask.to(Device::cpu()).to(DType::F32).to_vector();
  const int64_t Bm = attention_mask.defined() ? B : 1;
  std::vector<float> bias(static_cast<size_t>(Bm * L * L));
  for (int64_t b = 0; b < Bm; ++b)
    for (int64_t q = 0; q < L; ++q)
      for (int64_t k = 0; k < L; ++k) {
        const bool masked = k > q || (!keep.empty() && keep[static_cast<size_t>(b * L + k)] == 0.0f);
        bias[static_cast<size_t>((b * L + q) * L + k)] = masked ? -FLT_MAX : 0.0f;
      }
  const Tensor mask_bias = Tensor::from_vector(bias, {Bm, 1, L, L}).to(device_);

  const Tensor ids_host = input_ids.to(Device::cpu()).contiguous();
  Tensor h = ops::embedding(ids_host, token_embedding_).to(device_);
  h = ops::add(h, position_embedding_.narrow(0, 0, L).unsqueeze(0));
  CLIPTextModelOutput out;
  out.last_hidden_state = final_layer_norm_.forward(encoder_.forward(h, mask_bias));

  // The end-of-text position of each row: the first largest id for the legacy eos_token_id 2,
  // else the first eos_token_id (position 0 when the row has none, as torch's argmax of zeros).
  const std::vector<int64_t> ids(ids_host.data<int64_t>(), ids_host.data<int64_t>() + B * L);
  std::vector<Tensor> rows;
  rows.reserve(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto begin = ids.begin() + b * L, end = begin + L;
    const int64_t pos = c.eos_token_id == 2 ? std::max_element(begin, end) - begin
                                            : std::find(begin, end, c.eos_token_id) == end
                                                  ? 0
                                                  : std::find(begin, end, c.eos_token_id) - begin;
    rows.push_back(out.last_hidden_state.select(0, b).narrow(0, pos, 1));
  }
  out.pooler_output = ops::cat(rows, 0);
  return out;
}

}  // namespace vgen
