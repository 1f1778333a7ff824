// The diffusers calls of the Wan fixtures as GenerationParams. The image-to-video / Wan2.2
// fixtures (tools/fixtures/make_wan_i2v_fixtures.py): each `<name>_ref/pipeline.json` lists
// runs whose outputs are in `<name>_ref/pipeline.safetensors` under the run's prefix.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "io/json.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "pipelines/pipeline.h"
#include "support/parity.h"

namespace vgen::testing {

inline const std::vector<std::string> kWanI2VFixtures = {"wan21_i2v_tiny", "wan21_flf2v_tiny", "wan22_t2v_tiny",
                                                         "wan22_i2v_tiny", "wan22_ti2v_tiny"};

inline Json wan_fixture_spec(const std::string& name) { return read_json_file(fixture(name + "_ref/pipeline.json")); }

// The prefix of a run's tensors ("" for the main run).
inline std::string run_prefix(const std::string& key) { return key == "(no prefix)" ? "" : key; }

// The fields every Wan fixture call has: prompts, size, frames, steps, guidance.
inline GenerationParams wan_call_fields(const Json& call) {
  GenerationParams p;
  p.prompt = call["prompt"].get<std::string>();
  p.negative_prompt = call["negative_prompt"].get<std::string>();
  p.height = call["height"].get<int64_t>();
  p.width = call["width"].get<int64_t>();
  p.num_frames = call["num_frames"].get<int64_t>();
  p.num_inference_steps = call["num_inference_steps"].get<int>();
  p.guidance_scale = call["guidance_scale"].get<double>();
  return p;
}

// The `call` of a text-to-video fixture (tools/fixtures/make_wan_fixtures.py: `<name>_ref/
// pipeline.json`), with its initial latents.
inline GenerationParams wan_t2v_call_params(const std::string& name) {
  const Json call = read_json_file(fixture(name + "_ref/pipeline.json"))["call"];
  GenerationParams p = wan_call_fields(call);
  p.max_sequence_length = call["max_sequence_length"].get<int>();
  p.latents = reference(name + "_ref/pipeline.safetensors").get("latents");
  return p;
}

// The GenerationParams of one run of pipeline.json; `ref` holds its latents.
inline GenerationParams wan_run_params(const std::string& name, const Json& run, const Json& spec,
                                       const WeightStore& ref) {
  GenerationParams p = wan_call_fields(run);
  if (run.contains("guidance_scale_2") && !run["guidance_scale_2"].is_null())
    p.guidance_scale_2 = run["guidance_scale_2"].get<double>();
  p.max_sequence_length = spec["max_sequence_length"].get<int>();
  p.latents = ref.get(run["latents"].get<std::string>());
  if (run.contains("image")) p.image = media::read_image(fixture(name + "_ref/" + run["image"].get<std::string>()));
  if (run.contains("last_image"))
    p.last_image = media::read_image(fixture(name + "_ref/" + run["last_image"].get<std::string>()));
  return p;
}

}  // namespace vgen::testing
