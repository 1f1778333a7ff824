#include "config/engine_config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "io/config_reader.h"

namespace vgen {
namespace {

using Json = nlohmann::json;

ConfigSource::Mark mark_of(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  return m.is_null() ? ConfigSource::Mark{} : ConfigSource::Mark{m.line + 1, m.column + 1};
}

[[noreturn]] void fail_at(const ConfigSource& source, const YAML::Node& node, const std::string& path,
                          const std::string& what) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) fail("{}: {}: {}", source.file, path, what);
  fail("{}:{}:{}: {}: {}", source.file, m.line + 1, m.column + 1, path, what);
}

// A plain (unquoted) YAML scalar as the JSON value it spells: true/false, an integer, a finite
// number; anything else (quoted text included) stays a string, so that the reader's type
// errors show it as written.
Json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() != "?" || s.empty()) return s;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(s.c_str(), &end, 10);
  if (*end == '\0' && errno != ERANGE) return static_cast<int64_t>(i);
  const double d = std::strtod(s.c_str(), &end);
  if (*end == '\0' && std::isfinite(d)) return d;
  return s;
}

// The YAML tree as JSON for ConfigReader, recording where each key and value stands; a
// duplicate key or a key that is not a plain name is an error here.
Json yaml_to_json(const YAML::Node& node, const std::string& path, ConfigSource& source) {
  source.value_marks[path] = mark_of(node);
  if (node.IsNull()) return nullptr;
  if (node.IsScalar()) return scalar_to_json(node);
  if (node.IsSequence()) {
    Json out = Json::array();
    for (size_t i = 0; i < node.size(); ++i) out.push_back(yaml_to_json(node[i], fmt::format("{}[{}]", path, i), source));
    return out;
  }
  Json out = Json::object();
  // Range-for keeps the iterator's pair alive (`it->first` would dangle: it is a proxy).
  for (const auto& entry : node) {
    const YAML::Node& key_node = entry.first;
    if (!key_node.IsScalar()) fail_at(source, key_node, path.empty() ? "top level" : path, "keys must be plain names");
    const std::string key = key_node.Scalar();
    const std::string key_path = path.empty() ? key : path + "." + key;
    if (out.contains(key)) fail_at(source, key_node, key_path, "duplicate key");
    source.key_marks[key_path] = mark_of(key_node);
    out[key] = yaml_to_json(entry.second, key_path, source);
  }
  return out;
}

const std::vector<std::pair<std::string, QuantAlgo>> kQuantAlgos = {
    {"none", QuantAlgo::None}, {"FP8", QuantAlgo::FP8}, {"FP8_BLOCK_SCALES", QuantAlgo::FP8Blockwise},
    {"NVFP4", QuantAlgo::NVFP4}};
const std::vector<std::pair<std::string, QuantAlgo>> kLinearTypes = {
    {"default", QuantAlgo::None},
    {"trtllm-fp8-per-tensor", QuantAlgo::FP8},
    {"trtllm-fp8-blockwise", QuantAlgo::FP8Blockwise},
    {"trtllm-nvfp4", QuantAlgo::NVFP4}};

QuantAlgo parse_choice(const std::vector<std::pair<std::string, QuantAlgo>>& choices, const std::string& text,
                       const std::string& flag) {
  std::string list;
  for (const auto& [name, value] : choices) {
    if (name == text) return value;
    list += (list.empty() ? "" : ", ") + name;
  }
  fail("{}: '{}' is not one of: {}", flag, text, list);
}
const std::vector<std::pair<std::string, AttentionBackend>> kAttentionBackends = {
    {"auto", AttentionBackend::Auto},
    {"reference", AttentionBackend::Reference},
    {"flash", AttentionBackend::Flash},
    {"cudnn", AttentionBackend::CuDNN},
    {"sage", AttentionBackend::Sage}};

}  // namespace

std::string quant_algo_name(QuantAlgo algo) {
  for (const auto& [name, value] : kQuantAlgos)
    if (value == algo) return name;
  return "?";
}

bool quant_fast_accum_applies(QuantAlgo algo) { return algo == QuantAlgo::FP8 || algo == QuantAlgo::FP8Blockwise; }

bool QuantConfig::fast_accum_on() const { return quant_fast_accum_applies(quant_algo) && fast_accum.value_or(true); }

QuantAlgo parse_quant_algo(const std::string& text, const std::string& flag) { return parse_choice(kQuantAlgos, text, flag); }
QuantAlgo parse_linear_type(const std::string& text, const std::string& flag) { return parse_choice(kLinearTypes, text, flag); }

std::string attention_backend_name(AttentionBackend backend) {
  for (const auto& [name, value] : kAttentionBackends)
    if (value == backend) return name;
  return "?";
}

EngineConfig parse_engine_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) fail("{}: invalid YAML: {}", source, e.msg);
    fail("{}:{}:{}: invalid YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }

  auto where = std::make_shared<ConfigSource>();
  where->file = source;
  where->yaml = true;
  const Json doc = yaml_to_json(root, "", *where);
  const ConfigReader r(doc, where);
  EngineConfig c;

  const ConfigReader quant = r.section("quant_config");
  c.quant_config.quant_algo = quant.choice("quant_algo", c.quant_config.quant_algo, kQuantAlgos);
  c.quant_config.dynamic = quant.boolean("dynamic", c.quant_config.dynamic);
  c.quant_config.ignore = quant.string_list("ignore");
  for (size_t i = 0; i < c.quant_config.ignore.size(); ++i)
    if (c.quant_config.ignore[i].empty()) quant.fail_value(fmt::format("ignore[{}]", i), "empty pattern");
  if (quant.has("fast_accum")) c.quant_config.fast_accum = quant.boolean("fast_accum", true);
  if (c.quant_config.fast_accum.value_or(false) && !quant_fast_accum_applies(c.quant_config.quant_algo))
    quant.fail_value("fast_accum", fmt::format("true applies to the FP8 GEMMs only (quant_algo FP8 or "
                                               "FP8_BLOCK_SCALES, not {})",
                                               quant_algo_name(c.quant_config.quant_algo)));
  quant.reject_unknown();

  c.cache_config = read_cache_config(r.section("cache_config"));

  const ConfigReader parallel = r.section("parallel_config");
  ParallelConfig& pc = c.parallel_config;
  pc.cfg_size = static_cast<int>(parallel.integer("cfg_size", pc.cfg_size, 1, 2));
  pc.ulysses_size = static_cast<int>(parallel.integer("ulysses_size", pc.ulysses_size, 1, 1024));
  pc.ring_size = static_cast<int>(parallel.integer("ring_size", pc.ring_size, 1, 1024));
  pc.parallel_vae = parallel.boolean("parallel_vae", pc.parallel_vae);
  if (pc.world_size() > 1024)
    parallel.fail_value("ring_size", fmt::format("cfg_size x ulysses_size x ring_size = {} ranks (at most 1024)",
                                                 pc.world_size()));
  parallel.reject_unknown();

  const ConfigReader attention = r.section("attention");
  c.attention.backend = attention.choice("backend", c.attention.backend, kAttentionBackends);
  attention.reject_unknown();

  const ConfigReader cuda_graph = r.section("cuda_graph");
  c.cuda_graph.enabled = cuda_graph.boolean("enabled", c.cuda_graph.enabled);
  cuda_graph.reject_unknown();

  const ConfigReader conv = r.section("conv");
  c.conv.autotune = conv.boolean("autotune", c.conv.autotune);
  conv.reject_unknown();

  const ConfigReader gemm = r.section("gemm");
  c.gemm.autotune = gemm.boolean("autotune", c.gemm.autotune);
  gemm.reject_unknown();

  const ConfigReader offload = r.section("offload");
  c.offload.text_encoder = offload.boolean("text_encoder", c.offload.text_encoder);
  c.offload.idle_expert = offload.boolean("idle_expert", c.offload.idle_expert);
  offload.reject_unknown();

  const ConfigReader vae = r.section("vae");
  c.vae.chunk_frames = vae.integer("chunk_frames", c.vae.chunk_frames, 1, 1024);
  vae.reject_unknown();

  r.reject_unknown();
  return c;
}

EngineConfig load_engine_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the config file", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read the config file", path);
  return parse_engine_config(text.str(), path);
}

// The features land one by one; each lands with its line removed here.
std::vector<std::string> unimplemented_features(const EngineConfig& c) {
  std::vector<std::string> out;
  // `vgen generate` runs several ranks (its --cfg-size, --ulysses-size, --ring-size flags);
  // the server, the one reader of this file, runs one.
  if (c.parallel_config.world_size() != 1)
    out.push_back(fmt::format("parallel_config: {} ranks (cfg_size x ulysses_size x ring_size) are not implemented "
                              "in `vgen serve` yet (supported: 1; `vgen generate` runs them)",
                              c.parallel_config.world_size()));
  return out;
}

void require_implemented(const EngineConfig& config, const std::string& source) {
  const std::vector<std::string> missing = unimplemented_features(config);
  if (missing.empty()) return;
  std::string joined;
  for (const std::string& m : missing) joined += (joined.empty() ? "" : "; ") + m;
  fail("{}: {}", source, joined);
}

ExecutionSettings execution_settings(const EngineConfig& config, ExecutionSettings base) {
  // `auto` is also what an absent section reads as: it leaves the environment's choice
  // (VGEN_ATTENTION_BACKEND) in place, as the process-wide default did.
  if (config.attention.backend != AttentionBackend::Auto)
    base.attention_backend = attention_backend_name(config.attention.backend);
  base.cuda_graphs = config.cuda_graph.enabled;
  base.conv_autotune = config.conv.autotune;
  // Either switch turns GEMM autotuning off: the section's default (true) keeps the
  // environment's VGEN_GEMM_AUTOTUNE=0.
  base.gemm_autotune = base.gemm_autotune && config.gemm.autotune;
  return base;
}

}  // namespace vgen
