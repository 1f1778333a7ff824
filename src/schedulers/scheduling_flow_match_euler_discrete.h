// FlowMatchEulerDiscreteScheduler (diffusers' scheduling_flow_match_euler_discrete.py): the
// Euler step x + (sigma_next - sigma) * v of flow matching, with the shifted sigma schedules
// of SD3 / FLUX / Wan. Precision as diffusers: the constructor's training schedule in
// float32 (torch), set_timesteps in float64 (numpy), then float32 sigmas and timesteps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "schedulers/scheduler.h"

namespace vgen {

// The fields of scheduler_config.json, named and defaulted as in diffusers.
struct FlowMatchEulerDiscreteConfig {
  int num_train_timesteps = 1000;
  double shift = 1.0;
  bool use_dynamic_shifting = false;
  // Used by pipelines to compute mu (calculate_shift), not by the schedule itself.
  std::optional<double> base_shift = 0.5;
  std::optional<double> max_shift = 1.15;
  int base_image_seq_len = 256;
  int max_image_seq_len = 4096;
  bool invert_sigmas = false;
  std::optional<double> shift_terminal;
  bool use_karras_sigmas = false;
  bool use_exponential_sigmas = false;
  bool use_beta_sigmas = false;                 // true is rejected: needs scipy's beta quantile function
  std::string time_shift_type = "exponential";  // "exponential", "linear"
  // step() returns (1 - sigma_next) * x0 + sigma_next * noise; the noise comes from
  // vgen::randn (set_noise_seed), not torch's generator.
  bool stochastic_sampling = false;

  // Reads the fields by type; errors name `path` and the field. Values are checked by the
  // scheduler's constructor.
  static FlowMatchEulerDiscreteConfig from_json(const Json& config, const std::string& path);
};

class FlowMatchEulerDiscreteScheduler final : public Scheduler {
 public:
  // Validates the config; errors name config_path and the field.
  explicit FlowMatchEulerDiscreteScheduler(FlowMatchEulerDiscreteConfig config,
                                           const std::string& config_path = "FlowMatchEulerDiscreteConfig");

  std::string name() const override { return "FlowMatchEulerDiscreteScheduler"; }
  using Scheduler::set_timesteps;
  // diffusers' set_timesteps(num_inference_steps, sigmas=, mu=, timesteps=): given sigmas
  // (float32) go through the shift (or mu's time shift), shift_terminal and karras/exponential
  // like the computed ones; given timesteps are kept as float32 and, without sigmas, give the
  // sigmas timesteps / num_train_timesteps before the shift (so with shift != 1 the two
  // disagree, as diffusers warns). That arithmetic is numpy float32, the default schedule's float64.
  void set_timesteps(const ScheduleRequest& request) override;
  bool accepts_timesteps() const override { return true; }
  bool accepts_sigmas() const override { return true; }
  const std::vector<double>& timesteps() const override { return timesteps_; }
  const std::vector<double>& sigmas() const override { return sigmas_out_; }
  int64_t num_train_timesteps() const override { return config_.num_train_timesteps; }
  Tensor step(const Tensor& model_output, double timestep, const Tensor& sample) override;
  void set_noise_seed(uint64_t seed) override { noise_seed_ = seed; }

  // mu for use_dynamic_shifting, as FLUX's pipeline computes it (calculate_shift): linear in
  // the image token count between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift).
  double calculate_shift(int64_t image_seq_len) const;

  const FlowMatchEulerDiscreteConfig& config() const { return config_; }

 private:
  FlowMatchEulerDiscreteConfig config_;
  double sigma_min_ = 0.0;  // ends of the training schedule (float32 values)
  double sigma_max_ = 1.0;

  std::vector<double> timesteps_;
  std::vector<float> sigmas_;
  std::vector<double> sigmas_out_;
  int step_index_ = 0;
  uint64_t noise_seed_ = 0;
};

}  // namespace vgen
