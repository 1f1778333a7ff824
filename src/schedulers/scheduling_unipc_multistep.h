// UniPCMultistepScheduler (diffusers' scheduling_unipc_multistep.py): the UniP predictor
// plus UniC corrector multistep solver, the scheduler of the Wan2.1 checkpoints
// (flow_prediction with flow sigmas). The schedule and every scalar of the update are
// computed with diffusers' precision: numpy float64 for the sigma schedule, then float32
// sigmas and float32 scalar arithmetic like diffusers' 0-d torch tensors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "schedulers/scheduler.h"

namespace vgen {

// The fields of scheduler_config.json, named and defaulted as in diffusers.
struct UniPCMultistepConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // "linear", "scaled_linear", "squaredcos_cap_v2"
  std::optional<std::vector<double>> trained_betas;
  int solver_order = 2;
  std::string prediction_type = "epsilon";  // "epsilon", "sample", "v_prediction", "flow_prediction"
  bool thresholding = false;                // true is rejected: dynamic thresholding is not implemented
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  bool predict_x0 = true;
  std::string solver_type = "bh2";  // "bh1", "bh2" ("midpoint", "heun", "logrho" read as "bh2", as diffusers does)
  bool lower_order_final = true;
  std::vector<int> disable_corrector;
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;  // true is rejected: needs scipy's beta quantile function
  bool use_flow_sigmas = false;
  double flow_shift = 1.0;
  std::string timestep_spacing = "linspace";  // "linspace", "leading", "trailing"
  int steps_offset = 0;
  std::string final_sigmas_type = "zero";  // "zero", "sigma_min"
  bool rescale_betas_zero_snr = false;
  bool use_dynamic_shifting = false;
  std::string time_shift_type = "exponential";  // "exponential", "linear"
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  std::optional<double> shift_terminal;

  // Reads the fields by type; errors name `path` and the field. Values are checked by the
  // scheduler's constructor.
  static UniPCMultistepConfig from_json(const Json& config, const std::string& path);
};

class UniPCMultistepScheduler final : public Scheduler {
 public:
  // Validates the config; errors name config_path and the field.
  explicit UniPCMultistepScheduler(UniPCMultistepConfig config,
                                   const std::string& config_path = "UniPCMultistepConfig");

  std::string name() const override { return "UniPCMultistepScheduler"; }
  using Scheduler::set_timesteps;
  // diffusers 0.42.1's set_timesteps(num_inference_steps, sigmas=, mu=): no `timesteps`
  // argument (refused); `sigmas` only with use_flow_sigmas (refused otherwise, as diffusers),
  // and then they replace the linspace: flow_shift (or mu's time shift) and shift_terminal are
  // applied to them in float64, the first is nudged below 1 by 1e-6 when within 1e-6 of it,
  // timesteps are sigma * num_train_timesteps truncated to int64 and the final sigma follows
  // final_sigmas_type. num_inference_steps becomes len(sigmas) (a different value is ignored,
  // as diffusers ignores it). diffusers multiplies flow_shift by the argument, so its Python
  // list raises TypeError there; the reference passes np.array(sigmas) (float64), as here.
  void set_timesteps(const ScheduleRequest& request) override;
  bool accepts_timesteps() const override { return false; }
  bool accepts_sigmas() const override { return config_.use_flow_sigmas && !config_.use_exponential_sigmas; }
  const std::vector<double>& timesteps() const override { return timesteps_; }
  const std::vector<double>& sigmas() const override { return sigmas_out_; }
  int64_t num_train_timesteps() const override { return config_.num_train_timesteps; }
  Tensor step(const Tensor& model_output, double timestep, const Tensor& sample) override;

  const UniPCMultistepConfig& config() const { return config_; }

 private:
  struct AlphaSigma {
    float alpha, sigma;
  };
  // The scalars of one B(h) update from sigma_s0 to sigma_t; sigma_si are the sigmas of
  // the older model outputs used (newest first).
  struct BhTerms {
    float alpha_t, sigma_t, alpha_s0, sigma_s0, h_phi_1, B_h;
    std::vector<float> rks;             // (lambda_si - lambda_s0) / h, then 1
    std::vector<std::vector<float>> R;  // R[i][k] = rks[k]^i
    std::vector<float> b;
  };

  AlphaSigma alpha_sigma(float sigma) const;
  BhTerms bh_terms(float sigma_t, float sigma_s0, const std::vector<float>& sigma_si, int order) const;
  Tensor convert_model_output(const Tensor& model_output, const Tensor& sample) const;
  // x_t_ of the update: the order-1 step from x with the newest converted output m0.
  Tensor base_update(const BhTerms& terms, const Tensor& x, const Tensor& m0) const;
  // Differences (m_i - m0) / r_i of the older outputs, m_i = model_outputs_[newest - i].
  std::vector<Tensor> differences(const BhTerms& terms, int count) const;
  Tensor multistep_uni_p_bh_update(const Tensor& sample, int order) const;
  Tensor multistep_uni_c_bh_update(const Tensor& this_model_output, const Tensor& last_sample, int order) const;

  UniPCMultistepConfig config_;
  std::vector<float> alphas_cumprod_;  // float32, as diffusers keeps it
  std::vector<float> train_sigmas_;    // ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, float32

  std::vector<double> timesteps_;
  std::vector<float> sigmas_;  // the float32 schedule the update reads
  std::vector<double> sigmas_out_;

  // Step state, reset by set_timesteps.
  int step_index_ = 0;
  std::vector<Tensor> model_outputs_;  // the last solver_order converted outputs, oldest first
  int lower_order_nums_ = 0;
  int this_order_ = 0;
  Tensor last_sample_;
};

}  // namespace vgen
