// Step caching options (issue 15): which cache skips transformer calls, and its fields. The
// names are TensorRT-LLM VisualGen's `cache_config` for TeaCache (cache_backend,
// teacache_thresh, use_ret_steps, coefficients, coefficients_2) and diffusers' dataclasses for
// the others (MagCacheConfig: threshold, max_skip_steps, retention_ratio, num_inference_steps,
// mag_ratios; FirstBlockCacheConfig: threshold; TaylorSeerCacheConfig: cache_interval,
// disable_cache_before_step, disable_cache_after_step, max_order, taylor_factors_dtype,
// use_lite_mode, cache_identifiers, skip_predict_identifiers), plus cache-dit's
// max_continuous_cached_steps.
// The mechanism that applies them is pipelines/cache/step_cache.h.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace vgen {

class ConfigReader;

enum class CacheBackend { None, TeaCache, MagCache, FirstBlockCache, TaylorSeer };

struct CacheConfig {
  CacheBackend cache_backend = CacheBackend::None;  // none | teacache | magcache | fbcache | taylorseer

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

  // TaylorSeer (diffusers' TaylorSeerCacheConfig, hooks/taylorseer_cache.py; defaults are
  // diffusers'). Per branch and expert, call c (counted from 0) is computed when c <
  // disable_cache_before_step, when (c - disable_cache_before_step - 1) mod cache_interval == 0,
  // or when c >= disable_cache_after_step; the other calls predict the hooked module's output by
  // a Taylor expansion of order <= max_order from divided differences over the computed calls,
  // its factors stored in taylor_factors_dtype (BF16, F16 or F32). Which modules are hooked:
  // use_lite_mode (proj_out predicted, blocks.N skipped), else the regexes cache_identifiers
  // (predicted; default diffusers' "^blocks.*attn" etc., which match no module of
  // WanTransformer3DModel) and skip_predict_identifiers (zeros), matched in full against the
  // model's diffusers module names (pipelines/cache/step_cache.h: resolve_taylorseer_hooks).
  int cache_interval = 5;
  int disable_cache_before_step = 3;
  std::optional<int> disable_cache_after_step;
  int max_order = 1;
  DType taylor_factors_dtype = DType::BF16;
  bool use_lite_mode = false;
  std::vector<std::string> cache_identifiers;
  std::vector<std::string> skip_predict_identifiers;

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
// The fields with a default that one backend alone reads (teacache_thresh, use_ret_steps:
// teacache; max_skip_steps, retention_ratio: magcache; cache_interval, disable_cache_before_step,
// max_order, taylor_factors_dtype: taylorseer): given with another backend they are errors.
const std::vector<std::pair<std::string, CacheBackend>>& cache_fields_of_one_backend();
// "none", "teacache", "magcache", "fbcache" (also "first_block_cache"), "taylorseer"; nullopt otherwise.
std::optional<CacheBackend> parse_cache_backend(const std::string& name);
// "none | teacache | magcache | fbcache | taylorseer", for messages and --help.
const char* cache_backend_choices();

// Reads a cache_config mapping (YAML section or JSON object) strictly: unknown keys, wrong
// types and the problems of CacheConfig::problem() are errors naming the key.
CacheConfig read_cache_config(const ConfigReader& section);

// taylor_factors_dtype as diffusers' torch dtype names it: "bfloat16", "float16", "float32"
// (nullopt otherwise), and back.
std::optional<DType> parse_taylor_factors_dtype(const std::string& name);
std::string taylor_factors_dtype_name(DType dtype);

// "teacache (teacache_thresh 0.2, use_ret_steps)" for logs and `vgen info`.
std::string describe_cache_config(const CacheConfig& config);

}  // namespace vgen
