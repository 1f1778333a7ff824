#include "config/engine_config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace vgen {
namespace {

// Walks the YAML tree; every error carries "SOURCE:LINE:COL: key.path".
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void error(const YAML::Node& node, const std::string& path, const std::string& what) const {
    const YAML::Mark mark = node.Mark();
    if (mark.is_null()) fail("{}: {}: {}", source_, path, what);
    fail("{}:{}:{}: {}: {}", source_, mark.line + 1, mark.column + 1, path, what);
  }

  // Calls `on_key(key, value, key_path)` for every entry of the mapping `node` whose key is in
  // `known`; any other key is an error that lists the known ones. A null node (an empty
  // section such as "teacache:") has no entries.
  void for_each_key(const YAML::Node& node, const std::string& path, const std::vector<std::string>& known,
                    const std::function<void(const std::string&, const YAML::Node&, const std::string&)>& on_key) const {
    if (node.IsNull()) return;
    if (!node.IsMap()) error(node, path.empty() ? "top level" : path, "expected a mapping of keys to values");
    std::set<std::string> seen;
    // Range-for keeps the iterator's pair alive (`it->first` would dangle: it is a proxy).
    for (const auto& entry : node) {
      const YAML::Node& key_node = entry.first;
      if (!key_node.IsScalar()) error(key_node, path.empty() ? "top level" : path, "keys must be plain names");
      const std::string key = key_node.Scalar();
      const std::string key_path = path.empty() ? key : path + "." + key;
      bool is_known = false;
      for (const std::string& k : known) is_known = is_known || k == key;
      if (!is_known) {
        std::string list;
        for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
        error(key_node, key_path, fmt::format("unknown key (known keys{}: {})", path.empty() ? "" : " of '" + path + "'",
                                              list));
      }
      if (!seen.insert(key).second) error(key_node, key_path, "duplicate key");
      on_key(key, entry.second, key_path);
    }
  }

  std::string scalar(const YAML::Node& node, const std::string& path, const char* expected) const {
    if (!node.IsScalar()) error(node, path, fmt::format("expected {}", expected));
    return node.Scalar();
  }

  bool boolean(const YAML::Node& node, const std::string& path) const {
    const std::string s = scalar(node, path, "true or false");
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    error(node, path, fmt::format("expected true or false, got '{}'", s));
  }

  int integer(const YAML::Node& node, const std::string& path, int min, int max) const {
    const std::string s = scalar(node, path, "an integer");
    char* end = nullptr;
    errno = 0;
    const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE) error(node, path, fmt::format("expected an integer, got '{}'", s));
    if (v < min || v > max) error(node, path, fmt::format("{} is out of range [{}, {}]", v, min, max));
    return static_cast<int>(v);
  }

  double number(const YAML::Node& node, const std::string& path) const {
    const std::string s = scalar(node, path, "a number");
    char* end = nullptr;
    const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v)) error(node, path, fmt::format("expected a number, got '{}'", s));
    return v;
  }

  template <typename E>
  E choice(const YAML::Node& node, const std::string& path, const std::vector<std::pair<std::string, E>>& options) const {
    const std::string s = scalar(node, path, "a name");
    std::string list;
    for (const auto& [name, value] : options) {
      if (name == s) return value;
      list += (list.empty() ? "" : ", ") + name;
    }
    error(node, path, fmt::format("'{}' is not one of: {}", s, list));
  }

  // A sequence (null: empty) of items read by `item`.
  template <typename T>
  std::vector<T> list(const YAML::Node& node, const std::string& path,
                      const std::function<T(const YAML::Node&, const std::string&)>& item) const {
    std::vector<T> out;
    if (node.IsNull()) return out;
    if (!node.IsSequence()) error(node, path, "expected a list");
    for (size_t i = 0; i < node.size(); ++i) out.push_back(item(node[i], fmt::format("{}[{}]", path, i)));
    return out;
  }

 private:
  std::string source_;
};

const std::vector<std::pair<std::string, QuantAlgo>> kQuantAlgos = {
    {"none", QuantAlgo::None}, {"fp8", QuantAlgo::FP8}, {"fp8_blockwise", QuantAlgo::FP8Blockwise},
    {"nvfp4", QuantAlgo::NVFP4}};
const std::vector<std::pair<std::string, AttentionBackend>> kAttentionBackends = {
    {"auto", AttentionBackend::Auto},
    {"reference", AttentionBackend::Reference},
    {"flash", AttentionBackend::Flash},
    {"cudnn", AttentionBackend::CuDNN}};

}  // namespace

std::string quant_algo_name(QuantAlgo algo) {
  for (const auto& [name, value] : kQuantAlgos)
    if (value == algo) return name;
  return "?";
}

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

  const Reader r(source);
  EngineConfig c;
  const auto string_item = [&r](const YAML::Node& n, const std::string& p) {
    std::string s = r.scalar(n, p, "a string");
    if (s.empty()) r.error(n, p, "empty pattern");
    return s;
  };
  const auto number_item = [&r](const YAML::Node& n, const std::string& p) { return r.number(n, p); };

  r.for_each_key(root, "", {"linear", "teacache", "parallel", "attention", "cuda_graph", "conv"},
                 [&](const std::string& section, const YAML::Node& node, const std::string& path) {
    if (section == "linear") {
      r.for_each_key(node, path, {"quant_algo", "dynamic", "ignore"},
                     [&](const std::string& key, const YAML::Node& v, const std::string& p) {
        if (key == "quant_algo") c.linear.quant_algo = r.choice(v, p, kQuantAlgos);
        if (key == "dynamic") c.linear.dynamic = r.boolean(v, p);
        if (key == "ignore") c.linear.ignore = r.list<std::string>(v, p, string_item);
      });
    } else if (section == "teacache") {
      r.for_each_key(node, path, {"enabled", "threshold", "use_ret_steps", "warmup_steps", "coefficients"},
                     [&](const std::string& key, const YAML::Node& v, const std::string& p) {
        if (key == "enabled") c.teacache.enabled = r.boolean(v, p);
        if (key == "threshold") {
          c.teacache.threshold = r.number(v, p);
          if (c.teacache.threshold <= 0) r.error(v, p, fmt::format("must be > 0, got {}", c.teacache.threshold));
        }
        if (key == "use_ret_steps") c.teacache.use_ret_steps = r.boolean(v, p);
        if (key == "warmup_steps") c.teacache.warmup_steps = r.integer(v, p, 0, 1000);
        if (key == "coefficients") {
          c.teacache.coefficients = r.list<double>(v, p, number_item);
          if (c.teacache.coefficients.empty()) r.error(v, p, "needs at least one coefficient");
        }
      });
    } else if (section == "parallel") {
      r.for_each_key(node, path, {"cfg_size", "ulysses_size"},
                     [&](const std::string& key, const YAML::Node& v, const std::string& p) {
        if (key == "cfg_size") c.parallel.cfg_size = r.integer(v, p, 1, 2);
        if (key == "ulysses_size") c.parallel.ulysses_size = r.integer(v, p, 1, 1024);
      });
    } else if (section == "attention") {
      r.for_each_key(node, path, {"backend"}, [&](const std::string&, const YAML::Node& v, const std::string& p) {
        c.attention.backend = r.choice(v, p, kAttentionBackends);
      });
    } else if (section == "cuda_graph") {
      r.for_each_key(node, path, {"enabled"}, [&](const std::string&, const YAML::Node& v, const std::string& p) {
        c.cuda_graph.enabled = r.boolean(v, p);
      });
    } else if (section == "conv") {
      r.for_each_key(node, path, {"autotune"}, [&](const std::string&, const YAML::Node& v, const std::string& p) {
        c.conv.autotune = r.boolean(v, p);
      });
    }
  });
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
  if (c.linear.quant_algo != QuantAlgo::None)
    out.push_back(fmt::format("linear.quant_algo: {} is not implemented yet (supported: none)",
                              quant_algo_name(c.linear.quant_algo)));
  if (c.teacache.enabled) out.push_back("teacache.enabled: TeaCache is not implemented yet (supported: false)");
  if (c.parallel.cfg_size != 1)
    out.push_back(fmt::format("parallel.cfg_size: {} is not implemented yet (supported: 1)", c.parallel.cfg_size));
  if (c.parallel.ulysses_size != 1)
    out.push_back(
        fmt::format("parallel.ulysses_size: {} is not implemented yet (supported: 1)", c.parallel.ulysses_size));
  if (c.attention.backend == AttentionBackend::Flash)
    out.push_back("attention.backend: flash is not implemented yet (supported: auto, cudnn, reference)");
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
  return base;
}

}  // namespace vgen
