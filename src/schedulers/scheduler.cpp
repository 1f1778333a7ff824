#include "schedulers/scheduler.h"

#include <algorithm>

#include <fmt/ranges.h>

#include "schedulers/scheduling_flow_match_euler_discrete.h"
#include "schedulers/scheduling_unipc_multistep.h"

namespace vgen {
namespace {

constexpr const char* kUniPC = "UniPCMultistepScheduler";
constexpr const char* kFlowMatchEuler = "FlowMatchEulerDiscreteScheduler";

// The config as the target class reads it. Fields both classes share keep their meaning
// (diffusers' from_config passes them on and ignores the rest); the flow shift is renamed,
// and a FlowMatchEuler config describes a flow-matching model, which UniPC only denoises
// with flow prediction and flow sigmas.
Json convert_config(const Json& config, const std::string& from, const std::string& to) {
  Json out = config;
  out["_class_name"] = to;
  if (to == kFlowMatchEuler && !config.contains("shift") && config.contains("flow_shift"))
    out["shift"] = config["flow_shift"];
  if (to == kUniPC && from == kFlowMatchEuler) {
    if (!config.contains("flow_shift") && config.contains("shift")) out["flow_shift"] = config["shift"];
    if (!config.contains("prediction_type")) out["prediction_type"] = "flow_prediction";
    if (!config.contains("use_flow_sigmas")) out["use_flow_sigmas"] = true;
  }
  return out;
}

}  // namespace

std::vector<std::string> supported_schedulers() { return {kFlowMatchEuler, kUniPC}; }

std::unique_ptr<Scheduler> make_scheduler(const Json& config, const std::string& config_path,
                                          const SchedulerOverrides& overrides) {
  if (!config.is_object()) fail("{}: a scheduler config must be a JSON object, got {}", config_path, config.dump());
  const std::vector<std::string> supported = supported_schedulers();
  std::string source;
  if (auto it = config.find("_class_name"); it != config.end() && !it->is_null()) {
    if (!it->is_string()) fail("{}: field '_class_name' must be a string, got {}", config_path, it->dump());
    source = it->get<std::string>();
  }
  const std::string target = overrides.scheduler.value_or(source);
  if (target.empty())
    fail("{}: no '_class_name' says which scheduler to build (supported: {})", config_path, fmt::join(supported, ", "));
  if (std::find(supported.begin(), supported.end(), target) == supported.end()) {
    if (overrides.scheduler) fail("unknown scheduler '{}' (supported: {})", target, fmt::join(supported, ", "));
    fail("{}: unknown scheduler '_class_name' \"{}\" (supported: {})", config_path, target, fmt::join(supported, ", "));
  }

  Json effective = target == source ? config : convert_config(config, source, target);
  if (overrides.flow_shift) effective[target == kUniPC ? "flow_shift" : "shift"] = *overrides.flow_shift;
  if (target == kUniPC)
    return std::make_unique<UniPCMultistepScheduler>(UniPCMultistepConfig::from_json(effective, config_path),
                                                     config_path);
  return std::make_unique<FlowMatchEulerDiscreteScheduler>(
      FlowMatchEulerDiscreteConfig::from_json(effective, config_path), config_path);
}

}  // namespace vgen
