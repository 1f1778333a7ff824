// Step caching owned by the denoising loop: for each transformer call (each CFG branch and
// each expert has its own state) decide whether to run the block stack or to reuse a cached
// residual. The model exposes three things through its forward (see
// WanTransformer3DModel::forward_with_stack): the block stack's input, the timestep embedding
// (TeaCache's modulated input) and a function running blocks [begin, end); the cache returns
// the block stack's output.
//
// Methods (CacheConfig, config/cache_config.h):
// - TeaCache (the published Wan rule, wan.md): rel = mean|e - e_prev| / mean|e_prev| of the
//   timestep embedding e; acc += |poly(rel)|; skip while acc < teacache_thresh, reusing
//   output - input of the last computed call; computing resets acc. Forced: the first 5 calls
//   of a state with use_ret_steps, else its first call and the generation's last step.
// - MagCache: diffusers' hooks/mag_cache.py: per call of a state (its own step counter),
//   accumulate the magnitude ratio mag_ratios[step]; skip while the accumulated error is within
//   threshold and at most max_skip_steps in a row, never in the retention steps.
// - First-Block-Cache: diffusers' hooks/first_block_cache.py: block 0 always runs; when the
//   relative mean absolute change of its residual against the last computed call's is at most
//   threshold, the other blocks are skipped (their cached residual added).
// - Any method: max_continuous_cached_steps bounds the skips in a row.
// A state never skips before it has a residual.
#pragma once

#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "config/cache_config.h"
#include "core/tensor.h"
#include "pipelines/cache/cache_stats.h"
#include "pipelines/denoising_loop.h"

namespace vgen {

class StepCache {
 public:
  // Runs blocks [begin, end) of the stack on `hidden` and returns their output.
  using BlockRunner = std::function<Tensor(const Tensor& hidden, int64_t begin, int64_t end)>;

  // `config` with its TeaCache coefficients resolved (the pipeline fills the model's published
  // ones); num_inference_steps: the generation's steps (MagCache's default, TeaCache's last step).
  StepCache(CacheConfig config, int num_inference_steps);

  const CacheConfig& config() const { return config_; }

  // The loop calls this before each step's transformer calls.
  void begin_step(int step_index) { step_ = step_index; }

  // One transformer call's block stack: `hidden` is its input [B, S, D], `modulated` the
  // timestep embedding, `num_blocks` the stack's length. Returns the stack's output.
  Tensor run(Branch branch, int expert, const Tensor& hidden, const Tensor& modulated, int64_t num_blocks,
             const BlockRunner& blocks);

  const CacheStats& stats() const { return stats_; }

 private:
  struct State {
    int calls = 0;        // calls seen (TeaCache warm-up, MagCache step index before its wrap)
    int consecutive = 0;  // skipped in a row
    Tensor residual;      // block stack output - input (First-Block-Cache: output - block 0's output)
    // TeaCache
    Tensor previous_modulated;
    double accumulated = 0.0;
    // MagCache (float32 as diffusers' tensors)
    int mag_step = 0;
    float accumulated_ratio = 1.0f, accumulated_err = 0.0f;
    int accumulated_steps = 0;
    // First-Block-Cache
    Tensor head_residual;
  };

  Tensor run_teacache(State& s, int expert, const Tensor& hidden, const Tensor& modulated, int64_t n,
                      const BlockRunner& blocks, bool& computed);
  Tensor run_magcache(State& s, const Tensor& hidden, int64_t n, const BlockRunner& blocks, bool& computed);
  Tensor run_fbcache(State& s, const Tensor& hidden, int64_t n, const BlockRunner& blocks, bool& computed);
  bool limit_reached(const State& s) const {
    return config_.max_continuous_cached_steps > 0 && s.consecutive >= config_.max_continuous_cached_steps;
  }

  CacheConfig config_;
  int num_inference_steps_;
  int step_ = 0;
  std::vector<float> mag_ratios_;  // interpolated to MagCache's num_inference_steps
  std::map<std::pair<int, int>, State> states_;
  CacheStats stats_;
};

// diffusers' nearest_interp (hooks/mag_cache.py): src resampled to `length` entries.
std::vector<float> nearest_interp(const std::vector<float>& src, int length);

// numpy.poly1d(coefficients)(x): coefficients highest power first.
double polyval(const std::vector<double>& coefficients, double x);

}  // namespace vgen
