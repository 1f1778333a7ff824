#include "nn/lora.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <regex>

#include "core/error.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen::nn {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

std::string list_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 8) out += fmt::format(" and {} more", names.size() - 8);
  return out;
}

// The file's tensors by key (the converters' `original_state_dict`), popped as they are converted.
class Keys {
 public:
  Keys(const SafetensorsFile& file, const std::string& strip) : file_(file) {
    for (const std::string& name : file.names()) {
      const TensorInfo& info = file.info(name);
      if (!is_floating(info.dtype))
        fail("{}: LoRA tensor '{}' has non-float dtype {}", file.path(), name, dtype_name(info.dtype));
      keys_[starts_with(name, strip) ? name.substr(strip.size()) : name] = name;
    }
  }
  bool has(const std::string& key) const { return keys_.count(key) != 0; }
  bool any(const std::function<bool(const std::string&)>& pred) const {
    for (const auto& [k, _] : keys_)
      if (pred(k)) return true;
    return false;
  }
  // The tensor as float32 on the host (undefined when absent) and its original key.
  std::optional<std::pair<Tensor, std::string>> pop(const std::string& key) {
    auto it = keys_.find(key);
    if (it == keys_.end()) return std::nullopt;
    std::pair<Tensor, std::string> out{file_.tensor(it->second), it->second};
    keys_.erase(it);
    return out;
  }
  void drop(const std::string& key) { keys_.erase(key); }
  std::vector<std::string> remaining() const {
    std::vector<std::string> out;
    for (const auto& [_, original] : keys_) out.push_back(original);
    return out;
  }
  std::vector<std::string> remaining_keys() const {
    std::vector<std::string> out;
    for (const auto& [k, _] : keys_) out.push_back(k);
    return out;
  }
  const std::string& path() const { return file_.path(); }

 private:
  const SafetensorsFile& file_;
  std::map<std::string, std::string> keys_;  // key without the prefix -> the file's key
};

Tensor to_f32(const Tensor& t) { return t.dtype() == DType::F32 ? t.contiguous().clone() : t.to(DType::F32); }

// diffusers' get_alpha_scales: alpha / rank split into a down and an up factor (powers of two
// moved to the up side), multiplied into the tensors in the file's dtype as torch does.
void fold_alpha(LoraUpdate& u, const Tensor& alpha, const std::string& alpha_key, DType down_dtype, DType up_dtype,
                const std::string& path) {
  VGEN_CHECK(alpha.numel() == 1, "{}: LoRA tensor '{}' must hold one value, has shape {}", path, alpha_key,
             shape_str(alpha.shape()));
  const double scale = static_cast<double>(alpha.to(DType::F32).item()) / static_cast<double>(u.down.size(0));
  double scale_down = scale, scale_up = 1.0;
  while (scale_down * 2 < scale_up) {
    scale_down *= 2;
    scale_up /= 2;
  }
  u.down = ops::scale(u.down, static_cast<float>(scale_down)).to(down_dtype).to(DType::F32);
  u.up = ops::scale(u.up, static_cast<float>(scale_up)).to(up_dtype).to(DType::F32);
}

// One module's lora_A / lora_B (+ alpha, + bias) taken from the file into `out` under `module`.
struct PairKeys {
  std::string down, up, alpha, bias;  // empty: not read for this module
};

void take(Keys& keys, const PairKeys& k, const std::string& module, LoraFile& out) {
  auto down = keys.pop(k.down);
  auto up = keys.pop(k.up);
  auto alpha = k.alpha.empty() ? std::nullopt : keys.pop(k.alpha);
  auto bias = k.bias.empty() ? std::nullopt : keys.pop(k.bias);
  if (!down && !up && !bias) {
    if (alpha) fail("{}: LoRA tensor '{}' has no '{}' / '{}' pair", keys.path(), alpha->second, k.down, k.up);
    return;
  }
  LoraUpdate u;
  u.file = keys.path();
  if (down || up) {
    if (!down || !up)
      fail("{}: LoRA tensor '{}' has no matching '{}' (half of the pair is missing)", keys.path(),
           down ? down->second : up->second, down ? k.up : k.down);
    u.key = down->second;
    if (down->first.dim() != 2 || up->first.dim() != 2 || down->first.size(0) != up->first.size(1))
      fail("{}: LoRA tensors '{}' {} and '{}' {} do not form a pair (need [rank, in] and [out, rank])", keys.path(),
           down->second, shape_str(down->first.shape()), up->second, shape_str(up->first.shape()));
    u.down = to_f32(down->first);
    u.up = to_f32(up->first);
    if (alpha) fold_alpha(u, alpha->first, alpha->second, down->first.dtype(), up->first.dtype(), keys.path());
  } else if (alpha) {
    fail("{}: LoRA tensor '{}' has no '{}' / '{}' pair", keys.path(), alpha->second, k.down, k.up);
  }
  if (bias) {
    if (bias->first.dim() != 1) fail("{}: LoRA bias '{}' must be 1-D, has shape {}", keys.path(), bias->second,
                                     shape_str(bias->first.shape()));
    if (u.key.empty()) u.key = bias->second;
    u.bias_key = bias->second;
    u.bias = to_f32(bias->first);
  }
  out.modules[module] = std::move(u);
}

// _convert_non_diffusers_wan_lora_to_diffusers (original Wan / ComfyUI keys).
void convert_wan(Keys& keys, LoraFile& out) {
  const std::string down = keys.any([](const std::string& k) { return contains(k, "lora_A"); }) ? "lora_A" : "lora_down";
  const std::string up = keys.any([](const std::string& k) { return contains(k, "lora_B"); }) ? "lora_B" : "lora_up";
  const bool is_i2v_lora = keys.any([](const std::string& k) { return contains(k, "k_img"); }) &&
                           keys.any([](const std::string& k) { return contains(k, "v_img"); });
  const bool has_time_projection_weight = keys.any(
      [](const std::string& k) { return starts_with(k, "time_projection") && ends_with(k, ".weight"); });
  std::set<int64_t> blocks;
  for (const std::string& k : keys.remaining_keys()) {
    // diffusers: norm diffs are zeros in the files seen, so they are dropped; an AccVideo-style
    // time_projection with only bias deltas would create LoRA layers without weights.
    if ((ends_with(k, ".diff") || ends_with(k, ".diff_b")) && contains(k, "norm")) keys.drop(k);
    else if (contains(k, "time_projection") && !has_time_projection_weight) keys.drop(k);
    else if (starts_with(k, "blocks.")) {
      const size_t dot = k.find('.', 7);
      char* end = nullptr;
      const std::string n = k.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
      const long long i = std::strtoll(n.c_str(), &end, 10);
      if (!n.empty() && *end == '\0') blocks.insert(i);
    }
  }
  auto pair = [&](const std::string& p, bool alpha, bool bias = true) {
    return PairKeys{p + "." + down + ".weight", p + "." + up + ".weight", alpha ? p + ".alpha" : "",
                    bias ? p + ".diff_b" : ""};
  };
  const std::vector<std::pair<std::string, std::string>> attn = {{"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"},
                                                                 {"o", "to_out.0"}};
  for (int64_t i : blocks) {
    const std::string b = fmt::format("blocks.{}.", i);
    for (const auto& [o, c] : attn) take(keys, pair(b + "self_attn." + o, true), b + "attn1." + c, out);
    for (const auto& [o, c] : attn) take(keys, pair(b + "cross_attn." + o, true), b + "attn2." + c, out);
    if (is_i2v_lora) {
      take(keys, pair(b + "cross_attn.k_img", true), b + "attn2.add_k_proj", out);
      take(keys, pair(b + "cross_attn.v_img", true), b + "attn2.add_v_proj", out);
    }
    take(keys, pair(b + "ffn.0", true), b + "ffn.net.0.proj", out);
    take(keys, pair(b + "ffn.2", true), b + "ffn.net.2", out);
  }
  take(keys, pair("time_projection.1", false), "condition_embedder.time_proj", out);
  take(keys, pair("head.head", false), "proj_out", out);
  // head.head.diff (LightX2V's distill LoRAs): diffusers makes it proj_out's lora_A with an
  // identity lora_B, i.e. a full weight delta, replacing a head.head lora pair if there was one.
  if (auto diff = keys.pop("head.head.diff")) {
    const Tensor d = diff->first;
    if (d.dim() != 2) fail("{}: LoRA tensor '{}' must be 2-D, has shape {}", keys.path(), diff->second, shape_str(d.shape()));
    LoraUpdate& u = out.modules["proj_out"];
    u.file = keys.path();
    u.key = diff->second;
    u.down = to_f32(d);
    std::vector<float> eye(static_cast<size_t>(d.size(0) * d.size(0)), 0.f);
    for (int64_t r = 0; r < d.size(0); ++r) eye[static_cast<size_t>(r * d.size(0) + r)] = 1.f;
    u.up = Tensor::from_vector(eye, {d.size(0), d.size(0)});
  }
  for (const auto& [theirs, ours] : std::vector<std::pair<std::string, std::string>>{
           {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
           {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
           {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
           {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
           {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
           {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"}})
    take(keys, pair(theirs, false, !starts_with(theirs, "img_emb") || keys.has(theirs + "." + up + ".weight")), ours,
         out);
  // Left-over `.diff` keys (full deltas of modules diffusers does not convert) are dropped, as
  // diffusers drops them; anything else left is a key no converter maps.
  const std::vector<std::string> rest = keys.remaining();
  bool all_diff = true;
  for (const std::string& k : rest) all_diff = all_diff && contains(k, ".diff");
  if (!all_diff) out.unmatched = rest;
}

// _convert_musubi_wan_lora_to_diffusers (musubi-tuner / kohya `lora_unet_` keys).
void convert_musubi(Keys& keys, LoraFile& out) {
  const bool is_i2v_lora = keys.any([](const std::string& k) { return contains(k, "k_img"); }) &&
                           keys.any([](const std::string& k) { return contains(k, "v_img"); });
  static const std::regex module_re(R"(^blocks_(\d+)_(self_attn_(q|k|v|o)|cross_attn_(q|k|v|o|k_img|v_img)|ffn_(0|2))\..*)");
  std::set<std::string> modules;
  for (const std::string& k : keys.remaining_keys()) {
    std::smatch m;
    if (std::regex_match(k, m, module_re)) modules.insert(k.substr(0, k.find('.')));
  }
  static const std::map<std::string, std::string> names = {
      {"self_attn_q", "attn1.to_q"},       {"self_attn_k", "attn1.to_k"},       {"self_attn_v", "attn1.to_v"},
      {"self_attn_o", "attn1.to_out.0"},   {"cross_attn_q", "attn2.to_q"},      {"cross_attn_k", "attn2.to_k"},
      {"cross_attn_v", "attn2.to_v"},      {"cross_attn_o", "attn2.to_out.0"},  {"cross_attn_k_img", "attn2.add_k_proj"},
      {"cross_attn_v_img", "attn2.add_v_proj"}, {"ffn_0", "ffn.net.0.proj"}, {"ffn_2", "ffn.net.2"}};
  for (const std::string& m : modules) {
    const size_t sep = m.find('_', 7);  // after "blocks_N"
    const std::string block = m.substr(7, sep - 7), part = m.substr(sep + 1);
    if (contains(part, "_img") && !is_i2v_lora) continue;  // left over, as diffusers leaves it
    const PairKeys k{m + ".lora_down.weight", m + ".lora_up.weight", m + ".alpha", ""};
    // diffusers pops all three of every module: a missing one is an error there too.
    for (const std::string& need : {k.down, k.up, k.alpha})
      if (!keys.has(need)) fail("{}: LoRA tensor 'lora_unet_{}' is missing (musubi-tuner keys come as lora_down, lora_up and alpha)", keys.path(), need);
    take(keys, k, "blocks." + block + "." + names.at(part), out);
  }
  out.unmatched = keys.remaining();
}

// peft's get_pattern_key: the first pattern that matches the end of the module name.
const Json* pattern_value(const Json& patterns, const std::string& module) {
  if (!patterns.is_object()) return nullptr;
  for (const auto& [pattern, value] : patterns.items())
    if (std::regex_match(module, std::regex("(.*\\.)?(" + pattern + ")"))) return &value;
  return nullptr;
}

// A file saved by diffusers' save_lora_weights carries its LoraConfig in the safetensors
// metadata (`lora_adapter_metadata`, keys prefixed `transformer.`); diffusers then builds the
// config from it instead of the shapes: scaling = lora_alpha / r per module (alpha_pattern,
// rank_pattern; sqrt(r) with use_rslora).
void apply_adapter_metadata(const SafetensorsFile& file, LoraFile& out) {
  auto it = file.metadata().find("lora_adapter_metadata");
  if (it == file.metadata().end()) return;
  Json all;
  try {
    all = Json::parse(it->second);
  } catch (const Json::parse_error& e) {
    fail("{}: malformed lora_adapter_metadata ({})", file.path(), e.what());
  }
  Json config = Json::object();
  for (const auto& [key, value] : all.items())
    if (starts_with(key, "transformer.")) config[key.substr(12)] = value;
  if (config.empty()) return;
  if (!config.contains("r") || !config.contains("lora_alpha"))
    fail("{}: lora_adapter_metadata has no transformer.r / transformer.lora_alpha", file.path());
  const bool rslora = config.value("use_rslora", false);
  if (config.value("use_dora", false)) fail("{}: DoRA adapters (use_dora) are not supported", file.path());
  const Json rank_pattern = config.value("rank_pattern", Json::object());
  const Json alpha_pattern = config.value("alpha_pattern", Json::object());
  for (auto& [module, u] : out.modules) {
    const Json* r = pattern_value(rank_pattern, module);
    const Json* alpha = pattern_value(alpha_pattern, module);
    const double rank = (r ? *r : config["r"]).get<double>();
    const double lora_alpha = (alpha ? *alpha : config["lora_alpha"]).get<double>();
    u.alpha_scale = rslora ? lora_alpha / std::sqrt(rank) : lora_alpha / rank;
  }
}

// diffusers / PEFT keys: NAME.lora_A.weight, NAME.lora_B.weight, NAME.lora_B.bias.
void convert_diffusers(Keys& keys, LoraFile& out) {
  std::set<std::string> modules;
  for (const std::string& k : keys.remaining_keys()) {
    if (contains(k, "dora_scale")) {  // lora_state_dict filters DoRA scales out (with a warning)
      std::fprintf(stderr, "warning: %s: dropping DoRA key '%s' (diffusers does not load DoRA scales)\n",
                   keys.path().c_str(), k.c_str());
      keys.drop(k);
      continue;
    }
    for (const char* suffix : {".lora_A.weight", ".lora_B.weight", ".lora_B.bias"})
      if (ends_with(k, suffix)) modules.insert(k.substr(0, k.size() - std::string(suffix).size()));
  }
  for (const std::string& m : modules)
    take(keys, PairKeys{m + ".lora_A.weight", m + ".lora_B.weight", "", m + ".lora_B.bias"}, m, out);
  out.unmatched = keys.remaining();
}

}  // namespace

LoraAdapterSpec parse_lora_adapter_spec(const std::string& text) {
  LoraAdapterSpec spec{text, 1.0};
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return spec;
  const std::string tail = text.substr(colon + 1);
  char* end = nullptr;
  const double scale = std::strtod(tail.c_str(), &end);
  const bool number = !tail.empty() && *end == '\0';
  if (!number && std::filesystem::is_regular_file(text)) return spec;  // "my:lora.safetensors"
  // (strtod also reads "nan", "inf" and overflows to inf: a non-finite scale makes NaN weights.)
  if (!number || !std::isfinite(scale) || std::fabs(scale) > kMaxLoraScale)
    fail("'{}': the LoRA scale after ':' must be a number in [-{}, {}] (FILE or FILE:SCALE), got '{}'", text,
         kMaxLoraScale, kMaxLoraScale, tail);
  spec.path = text.substr(0, colon);
  spec.scale = scale;
  return spec;
}

LoraFile read_lora_file(const std::string& path) {
  const SafetensorsFile file(path);
  const std::vector<std::string> names = file.names();
  if (names.empty()) fail("{}: the LoRA file holds no tensors", path);
  auto any_prefix = [&](const std::string& p) {
    for (const std::string& n : names)
      if (starts_with(n, p)) return true;
    return false;
  };
  LoraFile out;
  if (any_prefix("diffusion_model.")) {
    Keys keys(file, "diffusion_model.");
    convert_wan(keys, out);
  } else if (any_prefix("lora_unet_")) {
    Keys keys(file, "lora_unet_");
    convert_musubi(keys, out);
  } else {
    const bool prefixed = any_prefix("transformer.");
    Keys keys(file, prefixed ? "transformer." : "");
    if (prefixed)  // load_lora_adapter(prefix="transformer") keeps only the transformer's keys
      for (const std::string& n : names)
        if (!starts_with(n, "transformer.")) keys.drop(n);
    convert_diffusers(keys, out);
  }
  apply_adapter_metadata(file, out);
  if (out.modules.empty() && out.unmatched.empty()) fail("{}: no LoRA weights for a Wan transformer in the file", path);
  return out;
}

LoraSet::LoraSet(const std::vector<LoraAdapterSpec>& adapters, bool ignore_unmatched)
    : ignore_unmatched_(ignore_unmatched) {
  for (const LoraAdapterSpec& spec : adapters) {
    LoraFile file = read_lora_file(spec.path);
    if (!file.unmatched.empty()) {
      if (!ignore_unmatched)
        fail("{}: {} LoRA key(s) match no module of a Wan transformer: {} (lora_ignore_unmatched, --lora-ignore-unmatched, skips them)",
             spec.path, file.unmatched.size(), list_names(file.unmatched));
      std::fprintf(stderr, "warning: %s: ignoring %zu LoRA key(s) that match no module: %s\n", spec.path.c_str(),
                   file.unmatched.size(), list_names(file.unmatched).c_str());
    }
    for (auto& [module, update] : file.modules) {
      update.scale = spec.scale;
      updates_.push_back(std::make_unique<LoraUpdate>(std::move(update)));
      const LoraUpdate* u = updates_.back().get();
      if (u->down.defined()) targets_[module + ".weight"].push_back(u);
      if (u->bias.defined()) targets_[module + ".bias"].push_back(u);
    }
  }
}

bool LoraSet::touches(const std::string& tensor_name) const { return targets_.count(tensor_name) != 0; }

Tensor LoraSet::merge(const std::string& tensor_name, Tensor value) const {
  auto it = targets_.find(tensor_name);
  if (it == targets_.end()) return value;
  merged_.insert(tensor_name);
  const bool is_bias = ends_with(tensor_name, ".bias");
  for (const LoraUpdate* u : it->second) {
    // peft: scaling = lora_alpha / r times fuse_lora's lora_scale, a float32 multiplier.
    const float scaling = static_cast<float>(u->alpha_scale * u->scale);
    if (is_bias) {
      if (u->bias.shape() != value.shape())
        fail("{}: LoRA bias '{}' has shape {}, but '{}' is {}", u->file, u->bias_key, shape_str(u->bias.shape()),
             tensor_name, shape_str(value.shape()));
      value = ops::add(value, ops::scale(u->bias.to(value.device()), scaling));
      continue;
    }
    if (value.dim() != 2 || u->up.size(0) != value.size(0) || u->down.size(1) != value.size(1))
      fail("{}: LoRA tensor '{}' (lora_A {}, lora_B {}) does not fit '{}' {}", u->file, u->key,
           shape_str(u->down.shape()), shape_str(u->up.shape()), tensor_name, shape_str(value.shape()));
    // get_delta_weight: (B @ A) * scaling, then weight.data += delta.
    value = ops::add(value, ops::scale(ops::matmul(u->up.to(value.device()), u->down.to(value.device())), scaling));
  }
  return value;
}

void LoraSet::check_all_merged(const std::string& model) const {
  std::vector<std::string> left;
  std::set<std::string> files;
  for (const auto& [name, updates] : targets_)
    if (!merged_.count(name)) {
      left.push_back(name);
      for (const LoraUpdate* u : updates) files.insert(u->file);
    }
  if (left.empty()) return;
  std::string file_list;
  for (const std::string& f : files) file_list += (file_list.empty() ? "" : ", ") + f;
  if (!ignore_unmatched_)
    fail("{}: {} LoRA target(s) match no weight of {}: {} (lora_ignore_unmatched, --lora-ignore-unmatched, skips them)", file_list,
         left.size(), model, list_names(left));
  std::fprintf(stderr, "warning: %s: ignoring %zu LoRA target(s) that match no weight of %s: %s\n", file_list.c_str(),
               left.size(), model.c_str(), list_names(left).c_str());
}

}  // namespace vgen::nn
