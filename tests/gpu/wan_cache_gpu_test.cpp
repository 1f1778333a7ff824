// Step caching on the GPU: each case of tools/fixtures/make_wan_cache_fixtures.py run on CUDA in
// float32 (TF32 off) makes the same decisions as diffusers' reference (which the CPU test also
// matches: tests/pipelines/wan_cache_test.cpp), call by call, with the same latents; the
// decisions reduce device tensors (ops::mean_abs) on the GPU.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/config_reader.h"
#include "pipelines/registry.h"
#include "support/gpu.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"

using namespace vgen;
using namespace vgen::testing;

TEST(WanCacheGpu, DecisionsMatchTheReferencesInFloat32) {
  SKIP_WITHOUT_GPU();
  const Json doc = read_json_file(fixture("wan_cache_ref/cases.json"));
  const WeightStore ref = reference("wan_cache_ref/references.safetensors");
  for (const auto& [key, c] : doc.at("cases").items()) {
    SCOPED_TRACE(key);
    const std::string name = c.at("fixture").get<std::string>();
    const Json spec = wan_fixture_spec(name);
    GenerationParams p;
    if (spec.contains("call")) {
      p = wan_t2v_call_params(name);
    } else {
      const WeightStore fixture_ref = reference(name + "_ref/pipeline.safetensors");
      p = wan_run_params(name, spec.at("runs").at("(no prefix)"), spec, fixture_ref);
    }
    p.num_inference_steps = c.at("num_inference_steps").get<int>();
    p.cache = read_cache_config(ConfigReader(c.at("cache_config"), "cases.json", "cache_config"));
    PipelineOptions o;
    o.device = kGpu;
    o.dtype = DType::F32;
    o.execution.allow_tf32 = false;
    auto pipe = load_pipeline(fixture(name), o);
    const GenerationOutput out = pipe->generate(pipe->resolve(p));
    std::vector<std::vector<int>> decisions;
    for (const CacheDecision& d : out.cache.decisions) decisions.push_back({d.step, d.branch, d.expert, d.computed ? 1 : 0});
    if (p.cache->enabled()) EXPECT_EQ(decisions, c.at("decisions").get<std::vector<std::vector<int>>>());
    const double err = rel_l2(out.denoised_latents.to(Device::cpu()).to(DType::F32), ref.get(key));
    // 1e-4, or the case's bound for a run that float noise moves further (TaylorSeer with
    // bfloat16 factors: tests/pipelines/wan_cache_test.cpp).
    EXPECT_LT(err, c.value("rel_l2_bound", 1e-4));
    std::printf("[%s] cuda float32: %s; latents rel L2 %.2e\n", key.c_str(),
                out.cache.enabled() ? out.cache.summary().c_str() : "no cache", err);
  }
}
