// Step caching options (issue 15): which cache skips transformer calls, and its fields. The
// names are TensorRT-LLM VisualGen's `cache_config` for TeaCache (cache_backend,
// teacache_thresh, use_ret_steps, coefficients, coefficients_2) and diffusers' dataclasses for
// the others (MagCacheConfig: threshold, max_skip_steps, retention_ratio, num_inference_steps,
// mag_ratios; FirstBlockCacheConfig: threshold), plus cache-dit's max_continuous_cached_steps.
// The mechanism that applies them is pipelines/cache/step_cache.h.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vgen {

class ConfigReader;

enum class CacheBackend { None, TeaCache, MagCache, FirstBlockCache };

struct CacheConfig {
  CacheBackend cache_backend = CacheBackend::None;  // none | teacache | magcache | fbcache

  // TeaCache: skip while the accumulated rescaled relative L1 change of the timestep embedding
  // stays below teacache_thresh. use_ret_steps: the first 5 calls of each branch are computed
  // (the "retention steps" coefficients); otherwise the first and the last step are.
  double teacache_thresh = 0.2;
  bool use_ret_steps = true;
  // The rescaling polynomial, highest power first; empty: the model's published table (the
  // pipeline refuses models without one). coefficients_2: the second expert's (Wan2.2).
  std::vector<double> coefficients;
  std::vector<double> coefficients_2;

  // MagCache and First-Block-Cache: diffusers' `threshold` (unset: 0.06 and 0.05, diffusers' defaults).
  std::optional<double> threshold;
  // MagCache (diffusers' MagCacheConfig): at most max_skip_steps skipped calls in a row, no skip
  // in the first round(retention_ratio * num_inference_steps) calls, mag_ratios (one per step,
  // nearest-interpolated to num_inference_steps; required: they are model-dependent).
  int max_skip_steps = 3;
  double retention_ratio = 0.2;
  std::optional<int> num_inference_steps;  // unset: the generation's number of steps
  std::vector<double> mag_ratios;

  // Any backend: at most this many skipped calls in a row per branch and expert (0: no limit
  // beyond the method's own).
  int max_continuous_cached_steps = 0;

  bool enabled() const { return cache_backend != CacheBackend::None; }
  // The threshold the backend compares against.
  double effective_threshold() const;

  // The first problem with these values as (field name, message), e.g. {"teacache_thresh",
  // "must be in (0, 1], got 3"}; nullopt when they are valid. Front ends turn the field into
  // their own name (YAML key path, CLI flag, request field).
  std::optional<std::pair<std::string, std::string>> problem() const;
};

std::string cache_backend_name(CacheBackend backend);
// "none", "teacache", "magcache", "fbcache" (also "first_block_cache"); nullopt otherwise.
std::optional<CacheBackend> parse_cache_backend(const std::string& name);
// "none | teacache | magcache | fbcache", for messages and --help.
const char* cache_backend_choices();

// Reads a cache_config mapping (YAML section or JSON object) strictly: unknown keys, wrong
// types and the problems of CacheConfig::problem() are errors naming the key.
CacheConfig read_cache_config(const ConfigReader& section);

// "teacache (teacache_thresh 0.2, use_ret_steps)" for logs and `vgen info`.
std::string describe_cache_config(const CacheConfig& config);

}  // namespace vgen
