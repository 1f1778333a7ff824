#include "config/cache_config.h"

#include <cmath>
#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/config_reader.h"

namespace vgen {
namespace {

const std::vector<std::pair<std::string, CacheBackend>> kBackends = {
    {"none", CacheBackend::None},
    {"teacache", CacheBackend::TeaCache},
    {"magcache", CacheBackend::MagCache},
    {"fbcache", CacheBackend::FirstBlockCache},
    {"taylorseer", CacheBackend::TaylorSeer},
};

const std::vector<std::pair<std::string, DType>> kFactorDTypes = {
    {"bfloat16", DType::BF16},
    {"float16", DType::F16},
    {"float32", DType::F32},
};

// The first pattern of `patterns` that std::regex (ECMAScript) refuses, with why.
std::optional<std::string> bad_regex(const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    try {
      std::regex re(p);
    } catch (const std::regex_error& e) {
      return fmt::format("'{}' is not a valid regular expression ({})", p, e.what());
    }
  }
  return std::nullopt;
}

bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

double CacheConfig::effective_threshold() const {
  switch (cache_backend) {
    case CacheBackend::TeaCache: return teacache_thresh;
    case CacheBackend::MagCache: return threshold.value_or(0.06);         // MagCacheConfig.threshold
    case CacheBackend::FirstBlockCache: return threshold.value_or(0.05);  // FirstBlockCacheConfig.threshold
    case CacheBackend::TaylorSeer:  // no threshold: a fixed schedule
    case CacheBackend::None: break;
  }
  return 0.0;
}

std::optional<std::pair<std::string, std::string>> CacheConfig::problem() const {
  auto bad = [](const char* key, std::string what) {
    return std::optional<std::pair<std::string, std::string>>(std::pair<std::string, std::string>(key, std::move(what)));
  };
  if (!(teacache_thresh > 0.0 && teacache_thresh <= 1.0))
    return bad("teacache_thresh", fmt::format("must be in (0, 1], got {}", teacache_thresh));
  if (threshold && !(*threshold > 0.0 && *threshold <= 1.0))
    return bad("threshold", fmt::format("must be in (0, 1], got {}", *threshold));
  if (max_skip_steps < 1 || max_skip_steps > 1000)
    return bad("max_skip_steps", fmt::format("must be in [1, 1000], got {}", max_skip_steps));
  if (!(retention_ratio >= 0.0 && retention_ratio <= 1.0))
    return bad("retention_ratio", fmt::format("must be in [0, 1], got {}", retention_ratio));
  if (num_inference_steps && (*num_inference_steps < 1 || *num_inference_steps > 10000))
    return bad("num_inference_steps", fmt::format("must be in [1, 10000], got {}", *num_inference_steps));
  if (max_continuous_cached_steps < 0 || max_continuous_cached_steps > 1000)
    return bad("max_continuous_cached_steps", fmt::format("must be in [0, 1000], got {}", max_continuous_cached_steps));
  if (!all_finite(coefficients)) return bad("coefficients", "must be finite numbers");
  if (!all_finite(coefficients_2)) return bad("coefficients_2", "must be finite numbers");
  if (!all_finite(mag_ratios)) return bad("mag_ratios", "must be finite numbers");
  for (double r : mag_ratios)
    if (r <= 0.0) return bad("mag_ratios", fmt::format("must be positive (magnitude ratios), got {}", r));
  if (cache_interval < 1 || cache_interval > 1000)
    return bad("cache_interval", fmt::format("must be in [1, 1000], got {}", cache_interval));
  if (disable_cache_before_step < 0 || disable_cache_before_step > 10000)
    return bad("disable_cache_before_step", fmt::format("must be in [0, 10000], got {}", disable_cache_before_step));
  if (disable_cache_after_step && (*disable_cache_after_step < 0 || *disable_cache_after_step > 10000))
    return bad("disable_cache_after_step", fmt::format("must be in [0, 10000], got {}", *disable_cache_after_step));
  if (max_order < 0 || max_order > 8) return bad("max_order", fmt::format("must be in [0, 8], got {}", max_order));
  if (taylor_factors_dtype != DType::BF16 && taylor_factors_dtype != DType::F16 && taylor_factors_dtype != DType::F32)
    return bad("taylor_factors_dtype", "must be bfloat16, float16 or float32");
  if (const auto why = bad_regex(cache_identifiers)) return bad("cache_identifiers", *why);
  if (const auto why = bad_regex(skip_predict_identifiers)) return bad("skip_predict_identifiers", *why);
  // Fields of another backend than the chosen one would be silently ignored: refuse them.
  const bool tea = cache_backend == CacheBackend::TeaCache, mag = cache_backend == CacheBackend::MagCache;
  const bool taylor = cache_backend == CacheBackend::TaylorSeer;
  if (taylor && threshold)
    return bad("threshold", "does not apply to cache_backend taylorseer (it computes every cache_interval-th call)");
  if (!taylor && disable_cache_after_step)
    return bad("disable_cache_after_step", "applies to cache_backend taylorseer only");
  if (!taylor && use_lite_mode) return bad("use_lite_mode", "applies to cache_backend taylorseer only");
  if (!taylor && !cache_identifiers.empty()) return bad("cache_identifiers", "applies to cache_backend taylorseer only");
  if (!taylor && !skip_predict_identifiers.empty())
    return bad("skip_predict_identifiers", "applies to cache_backend taylorseer only");
  // diffusers raises "Cannot predict without prior initialization" at the first call then.
  if (taylor && disable_cache_before_step == 0 && cache_interval > 1)
    return bad("disable_cache_before_step",
               "must be at least 1 with cache_interval above 1 (the first call would be predicted before any was "
               "computed)");
  if (!tea && (!coefficients.empty() || !coefficients_2.empty()))
    return bad(coefficients.empty() ? "coefficients_2" : "coefficients", "applies to cache_backend teacache only");
  if (!mag && !mag_ratios.empty()) return bad("mag_ratios", "applies to cache_backend magcache only");
  if (!mag && num_inference_steps) return bad("num_inference_steps", "applies to cache_backend magcache only");
  if (tea && threshold) return bad("threshold", "is MagCache's and First-Block-Cache's; TeaCache's is teacache_thresh");
  if (mag && mag_ratios.empty())
    return bad("mag_ratios",
               "is required for cache_backend magcache: the magnitude ratios are model-dependent (diffusers' "
               "MagCacheConfig has no default either); calibrate them on the model");
  if (tea && !coefficients.empty() && coefficients.size() < 2)
    return bad("coefficients", "needs at least 2 values (a polynomial, highest power first)");
  if (tea && !coefficients_2.empty() && coefficients_2.size() < 2)
    return bad("coefficients_2", "needs at least 2 values (a polynomial, highest power first)");
  return std::nullopt;
}

std::string cache_backend_name(CacheBackend backend) {
  for (const auto& [name, value] : kBackends)
    if (value == backend) return name;
  return "?";
}

std::optional<CacheBackend> parse_cache_backend(const std::string& name) {
  for (const auto& [n, value] : kBackends)
    if (n == name) return value;
  if (name == "first_block_cache") return CacheBackend::FirstBlockCache;
  return std::nullopt;
}

const char* cache_backend_choices() { return "none | teacache | magcache | fbcache | taylorseer"; }

std::optional<DType> parse_taylor_factors_dtype(const std::string& name) {
  for (const auto& [n, value] : kFactorDTypes)
    if (n == name) return value;
  return std::nullopt;
}

std::string taylor_factors_dtype_name(DType dtype) {
  for (const auto& [n, value] : kFactorDTypes)
    if (value == dtype) return n;
  return std::string(dtype_name(dtype));
}

// Fields with a default that only one backend reads: problem() cannot tell them from the default
// once read, so their presence is checked where they are read (YAML/JSON keys, CLI flags).
const std::vector<std::pair<std::string, CacheBackend>>& cache_fields_of_one_backend() {
  static const std::vector<std::pair<std::string, CacheBackend>> fields = {
      {"teacache_thresh", CacheBackend::TeaCache},        {"use_ret_steps", CacheBackend::TeaCache},
      {"max_skip_steps", CacheBackend::MagCache},         {"retention_ratio", CacheBackend::MagCache},
      {"cache_interval", CacheBackend::TaylorSeer},       {"disable_cache_before_step", CacheBackend::TaylorSeer},
      {"max_order", CacheBackend::TaylorSeer},            {"taylor_factors_dtype", CacheBackend::TaylorSeer}};
  return fields;
}

CacheConfig read_cache_config(const ConfigReader& r) {
  CacheConfig c;
  c.cache_backend = r.choice("cache_backend", c.cache_backend, kBackends);
  c.teacache_thresh = r.number("teacache_thresh", c.teacache_thresh);
  c.use_ret_steps = r.boolean("use_ret_steps", c.use_ret_steps);
  c.coefficients = r.number_list("coefficients");
  c.coefficients_2 = r.number_list("coefficients_2");
  c.threshold = r.optional_number("threshold");
  c.max_skip_steps = r.int32("max_skip_steps", c.max_skip_steps);
  c.retention_ratio = r.number("retention_ratio", c.retention_ratio);
  if (auto n = r.optional_integer("num_inference_steps", 1, 10000)) c.num_inference_steps = static_cast<int>(*n);
  c.mag_ratios = r.number_list("mag_ratios");
  c.cache_interval = r.int32("cache_interval", c.cache_interval);
  c.disable_cache_before_step = r.int32("disable_cache_before_step", c.disable_cache_before_step);
  if (auto n = r.optional_integer("disable_cache_after_step", 0, 10000))
    c.disable_cache_after_step = static_cast<int>(*n);
  c.max_order = r.int32("max_order", c.max_order);
  c.taylor_factors_dtype = r.choice("taylor_factors_dtype", c.taylor_factors_dtype, kFactorDTypes);
  c.use_lite_mode = r.boolean("use_lite_mode", c.use_lite_mode);
  c.cache_identifiers = r.string_list("cache_identifiers");
  c.skip_predict_identifiers = r.string_list("skip_predict_identifiers");
  c.max_continuous_cached_steps = r.int32("max_continuous_cached_steps", c.max_continuous_cached_steps);
  r.reject_unknown();
  for (const auto& [key, backend] : cache_fields_of_one_backend())
    if (r.present(key) && c.cache_backend != backend)
      r.fail_value(key, fmt::format("applies to cache_backend {} only (cache_backend is {})", cache_backend_name(backend),
                                    cache_backend_name(c.cache_backend)));
  if (const auto p = c.problem()) r.fail_value(p->first, p->second);
  return c;
}

std::string describe_cache_config(const CacheConfig& c) {
  std::string s = cache_backend_name(c.cache_backend);
  switch (c.cache_backend) {
    case CacheBackend::None: return s;
    case CacheBackend::TeaCache:
      s += fmt::format(" (teacache_thresh {}, use_ret_steps {}", c.teacache_thresh, c.use_ret_steps);
      break;
    case CacheBackend::MagCache:
      s += fmt::format(" (threshold {}, max_skip_steps {}, retention_ratio {}, {} mag_ratios", c.effective_threshold(),
                       c.max_skip_steps, c.retention_ratio, c.mag_ratios.size());
      break;
    case CacheBackend::FirstBlockCache: s += fmt::format(" (threshold {}", c.effective_threshold()); break;
    case CacheBackend::TaylorSeer:
      s += fmt::format(" (cache_interval {}, disable_cache_before_step {}, disable_cache_after_step {}, max_order {}, "
                       "taylor_factors_dtype {}, use_lite_mode {}",
                       c.cache_interval, c.disable_cache_before_step,
                       c.disable_cache_after_step ? std::to_string(*c.disable_cache_after_step) : "none", c.max_order,
                       taylor_factors_dtype_name(c.taylor_factors_dtype), c.use_lite_mode);
      if (!c.cache_identifiers.empty()) s += fmt::format(", cache_identifiers [{}]", fmt::join(c.cache_identifiers, ", "));
      if (!c.skip_predict_identifiers.empty())
        s += fmt::format(", skip_predict_identifiers [{}]", fmt::join(c.skip_predict_identifiers, ", "));
      break;
  }
  if (c.max_continuous_cached_steps > 0) s += fmt::format(", max_continuous_cached_steps {}", c.max_continuous_cached_steps);
  return s + ")";
}

}  // namespace vgen
