// Step caching owned by the denoising loop: for each transformer call (each CFG branch and
// each expert has its own state) decide whether to run the block stack or to reuse a cached
// residual. The model exposes three things through its forward (see
// WanTransformer3DModel::forward_with_stack): the block stack's input, the timestep embedding
// (TeaCache's modulated input) and a function running blocks [begin, end); the cache returns
// the block stack's output.
//
// Methods (CacheConfig, config/cache_config.h):
// - TeaCache (TeaCache4Wan2.1's rule, as TensorRT-LLM VisualGen runs it): rel = mean|e - e_prev|
//   / mean|e_prev| of the modulated input e: the timestep projection timestep_proj (TeaCache's
//   e0, [B, 6, dim]) with use_ret_steps, else the timestep embedding temb; acc += poly(rel)
//   (signed, as np.poly1d: the published polynomials dip below 0 at some rel); skip while acc
//   < teacache_thresh, reusing output - input of the last computed call; computing resets acc.
//   Forced: the first 5 calls of a state with use_ret_steps, else its first call and the
//   generation's last step. (The published coefficient sets were fitted on those inputs: the
//   use_ret_steps ones on e0, the others on temb.)
// - MagCache: diffusers' hooks/mag_cache.py: per call of a state (its own step counter),
//   accumulate the magnitude ratio mag_ratios[step]; skip while the accumulated error is within
//   threshold and at most max_skip_steps in a row, never in the retention steps.
// - First-Block-Cache: diffusers' hooks/first_block_cache.py: block 0 always runs; when the
//   relative mean absolute change of its residual against the last computed call's is at most
//   threshold, the other blocks are skipped (their cached residual added).
// - TaylorSeer: diffusers' hooks/taylorseer_cache.py: per call of a state (its own counter c),
//   compute when c < disable_cache_before_step, (c - disable_cache_before_step - 1) mod
//   cache_interval == 0 or c >= disable_cache_after_step; otherwise predict the hooked module's
//   output as sum_k factor_k * d^k / k!, d the calls since the last computed one, the factors
//   the divided differences of the computed outputs (order <= max_order, stored in
//   taylor_factors_dtype). For Wan the hooks diffusers places (resolve_taylorseer_hooks) leave
//   one useful case: proj_out predicted (use_lite_mode), whose prediction is the call's output;
//   its elementwise arithmetic commutes with unpatchify, so vgen predicts the transformer's
//   output itself (run_output) and skips the whole forward: the same numbers.
// - Any method: max_continuous_cached_steps bounds the skips in a row.
// A state never skips before it has a residual.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/cache_config.h"
#include "core/tensor.h"
#include "pipelines/cache/cache_stats.h"
#include "pipelines/denoising_loop.h"

namespace vgen {

// What diffusers' apply_taylorseer_cache hooks in a model whose modules (torch's
// named_modules(), the root "" included) are `module_names`: `cached` are predicted (Taylor),
// `skipped` return zeros on predicted calls.
struct TaylorSeerHooks {
  std::vector<std::string> cached, skipped;
  // vgen runs: nothing hooked (every call computed, as diffusers), or proj_out predicted, with
  // any skipped modules only inside the block stack or norm_out (whose outputs then only feed
  // proj_out, so they do not change the call's output).
  bool predicts_output() const { return !cached.empty(); }
};
// diffusers' pattern resolution (re.fullmatch; use_lite_mode overrides the identifiers), then
// the check that vgen runs the result; fails naming the cache_config field otherwise.
TaylorSeerHooks resolve_taylorseer_hooks(const CacheConfig& config, const std::vector<std::string>& module_names);

class StepCache {
 public:
  // Runs blocks [begin, end) of the stack on `hidden` and returns their output.
  using BlockRunner = std::function<Tensor(const Tensor& hidden, int64_t begin, int64_t end)>;

  // `config` with its TeaCache coefficients resolved (the pipeline fills the model's published
  // ones); num_inference_steps: the generation's steps (MagCache's default, TeaCache's last step).
  // module_names: the model's diffusers module names (TaylorSeer's hooks), else unused.
  StepCache(CacheConfig config, int num_inference_steps, const std::vector<std::string>& module_names = {});

  const CacheConfig& config() const { return config_; }

  // The loop calls this before each step's transformer calls.
  void begin_step(int step_index) { step_ = step_index; }

  // The call's timestep conditioning, TeaCache's modulated inputs: temb [B, dim] and its
  // projection timestep_proj [B, 6, dim] (per token: [B, S, ...]).
  struct TimestepEmbeddings {
    Tensor temb, timestep_proj;
  };
  // One transformer call's block stack: `hidden` is its input [B, S, D], `num_blocks` the
  // stack's length. Returns the stack's output.
  Tensor run(Branch branch, int expert, const Tensor& hidden, const TimestepEmbeddings& embeddings,
             int64_t num_blocks, const BlockRunner& blocks);

  // TaylorSeer: one transformer call's whole output (in the model's dtype), computed by
  // `forward` or predicted. The model's forward runs unchanged (its CUDA graph included).
  using OutputFn = std::function<Tensor()>;
  Tensor run_output(Branch branch, int expert, const OutputFn& forward);
  // Whether the backend works on whole calls (run_output) rather than on the block stack (run).
  bool works_on_output() const { return config_.cache_backend == CacheBackend::TaylorSeer; }
  const TaylorSeerHooks& taylorseer_hooks() const { return taylorseer_hooks_; }

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
    // TaylorSeer: the factors of order 0.. (taylor_factors_dtype), the call they were computed
    // at, and the output dtype.
    std::vector<Tensor> taylor_factors;
    int last_update_call = -1;
    DType output_dtype = DType::F32;
  };

  // The state of (branch, expert) and its stats entry.
  std::pair<State*, size_t> state_for(int branch, int expert);
  void record(State& s, size_t entry, int branch, int expert, bool computed);
  void taylor_update(State& s, const Tensor& features) const;
  Tensor taylor_predict(const State& s) const;

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
  TaylorSeerHooks taylorseer_hooks_;
  std::map<std::pair<int, int>, State> states_;
  CacheStats stats_;
};

// diffusers' nearest_interp (hooks/mag_cache.py): src resampled to `length` entries.
std::vector<float> nearest_interp(const std::vector<float>& src, int length);

// numpy.poly1d(coefficients)(x): coefficients highest power first.
double polyval(const std::vector<double>& coefficients, double x);

}  // namespace vgen
