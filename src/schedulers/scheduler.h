// Noise schedulers: the diffusers classes that turn a model prediction at one timestep
// into the sample at the next, built from a checkpoint's `scheduler_config.json`.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"

namespace vgen {

// What set_timesteps computes a schedule from, as the arguments of diffusers'
// scheduler.set_timesteps(num_inference_steps, sigmas=, mu=, timesteps=). With `timesteps`
// and/or `sigmas` given, num_inference_steps is their length (0 = take it from them; another
// value must match, else an error as diffusers raises). Which lists a class accepts, and what
// it does with them (shifting, final sigma), is the class's diffusers behaviour.
struct ScheduleRequest {
  int num_inference_steps = 0;
  std::optional<std::vector<double>> timesteps;
  std::optional<std::vector<double>> sigmas;
  std::optional<double> mu;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // The diffusers class name, e.g. "UniPCMultistepScheduler".
  virtual std::string name() const = 0;

  // Computes the schedule and resets the step state. `mu` is the dynamic-shift parameter,
  // required when the config sets use_dynamic_shifting (FLUX-style resolution-dependent shift).
  void set_timesteps(int num_inference_steps, std::optional<double> mu = std::nullopt) {
    set_timesteps(ScheduleRequest{num_inference_steps, std::nullopt, std::nullopt, mu});
  }
  // The same from explicit timesteps and/or sigmas (distilled few-step schedules). Lists the
  // class does not take (diffusers' signature or its checks) throw vgen::Error naming the argument.
  virtual void set_timesteps(const ScheduleRequest& request) = 0;
  // Whether set_timesteps takes `timesteps` / `sigmas` lists with this config (front ends
  // refuse the others before loading anything heavier); set_timesteps checks the rest.
  virtual bool accepts_timesteps() const = 0;
  virtual bool accepts_sigmas() const = 0;
  // What the pipeline passes to the transformer, as diffusers' values: UniPC's are int64
  // (with flow sigmas, sigma * num_train_timesteps truncated), FlowMatchEuler's are float32
  // sigma * num_train_timesteps. The transformer's time embedding takes them as float32.
  virtual const std::vector<double>& timesteps() const = 0;
  // One more than timesteps(): the last entry is the final sigma. float32 values.
  virtual const std::vector<double>& sigmas() const = 0;
  // The config's num_train_timesteps (Wan2.2's expert boundary is a fraction of it).
  virtual int64_t num_train_timesteps() const = 0;

  // One denoising step: model_output and sample have the same shape (any device). Must be
  // called once per entry of timesteps(), in order, with that entry as `timestep`.
  // Returns the sample at the next timestep, in the dtype diffusers returns (UniPC: sample's,
  // FlowMatchEuler: model_output's).
  virtual Tensor step(const Tensor& model_output, double timestep, const Tensor& sample) = 0;

  // Seed of the noise that stochastic schedulers add in step() (FlowMatchEuler with
  // stochastic_sampling); deterministic schedulers ignore it.
  virtual void set_noise_seed(uint64_t seed) {}
};

struct SchedulerOverrides {
  std::optional<std::string> scheduler;  // a class name from supported_schedulers()
  std::optional<double> flow_shift;      // UniPC's flow_shift / FlowMatchEuler's shift
};

// Builds the scheduler named by config["_class_name"], or by overrides.scheduler. A config
// written for the other class is converted: UniPC's flow_shift becomes FlowMatchEuler's
// shift; a FlowMatchEuler config becomes a flow-matching UniPC (shift -> flow_shift,
// prediction_type "flow_prediction", use_flow_sigmas true, unless the config says otherwise).
// Fields of the wrong type and unsupported values throw vgen::Error naming the field and
// config_path; keys diffusers would ignore (e.g. "_diffusers_version") are ignored.
std::unique_ptr<Scheduler> make_scheduler(const Json& config, const std::string& config_path,
                                          const SchedulerOverrides& overrides = {});

std::vector<std::string> supported_schedulers();

}  // namespace vgen
