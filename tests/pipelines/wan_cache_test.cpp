// Step caching (issue 15) on the tiny Wan fixtures against diffusers: MagCache and
// First-Block-Cache as diffusers' hooks run them, TeaCache as the published rule applied
// around diffusers' transformer (tools/fixtures/make_wan_cache_fixtures.py). Each case's
// decisions (which transformer calls ran the block stack) must equal the reference's, call
// by call, and its denoised latents must match. Also: the mechanism's own rules on a fake
// block stack, and the errors of resolve() naming the cache_config field.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/config_reader.h"
#include "io/json.h"
#include "ops/ops.h"
#include "pipelines/cache/step_cache.h"
#include "pipelines/registry.h"
#include "support/errors.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"

using namespace vgen;
using vgen::testing::error_of;
using vgen::testing::fixture;
using vgen::testing::rel_l2;

namespace {

const Json& cache_cases() {
  static const Json doc = read_json_file(fixture("wan_cache_ref/cases.json"));
  return doc;
}

// The fixture's call with the case's steps and cache_config (read as the engine YAML's section is).
GenerationParams case_params(const Json& c) {
  const std::string name = c.at("fixture").get<std::string>();
  const Json spec = read_json_file(fixture(name + "_ref/pipeline.json"));
  GenerationParams p;
  if (spec.contains("call")) {
    p = vgen::testing::wan_t2v_call_params(name);
  } else {
    const WeightStore ref = vgen::testing::reference(name + "_ref/pipeline.safetensors");
    p = vgen::testing::wan_run_params(name, spec.at("runs").at("(no prefix)"), spec, ref);
  }
  p.num_inference_steps = c.at("num_inference_steps").get<int>();
  p.cache = read_cache_config(ConfigReader(c.at("cache_config"), "cases.json", "cache_config"));
  return p;
}

// One case of cases.json: its decisions call by call and its latents.
void check_case(const std::string& key) {
  const Json& c = cache_cases().at("cases").at(key);
  const std::string name = c.at("fixture").get<std::string>();
  auto pipe = load_pipeline(fixture(name), PipelineOptions{});
  const ResolvedParams r = pipe->resolve(case_params(c));
  const GenerationOutput out = pipe->generate(r);

  std::vector<std::vector<int>> decisions;
  for (const CacheDecision& d : out.cache.decisions) decisions.push_back({d.step, d.branch, d.expert, d.computed ? 1 : 0});
  const auto want = c.at("decisions").get<std::vector<std::vector<int>>>();
  const bool cached = r.cache.enabled();
  if (cached) {
    EXPECT_EQ(decisions, want);
    EXPECT_EQ(out.cache.calls(), static_cast<int>(want.size()));
    int skipped = 0;
    for (const auto& d : want) skipped += d[3] == 0;
    EXPECT_EQ(out.cache.skipped(), skipped);
    EXPECT_GT(skipped, 0);  // the fixture's thresholds skip some calls, not all
    EXPECT_LT(skipped, static_cast<int>(want.size()));
    EXPECT_NE(out.cache.summary().find("skipped " + std::to_string(skipped) + "/" + std::to_string(want.size())),
              std::string::npos)
        << out.cache.summary();
  } else {
    EXPECT_FALSE(out.cache.enabled());
  }
  const double err = rel_l2(out.denoised_latents, vgen::testing::reference("wan_cache_ref/references.safetensors").get(key));
  EXPECT_LT(err, 1e-4);
  std::printf("[%s] %s; denoised latents rel L2 %.2e\n", key.c_str(), cached ? out.cache.summary().c_str() : "no cache",
              err);
}

}  // namespace

// One test per case (each a full 12-step generation): every case of cases.json is listed here.
TEST(WanCache, CasesAreAllTested) {
  std::vector<std::string> keys;
  for (const auto& [key, c] : cache_cases().at("cases").items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"t2v_fbcache", "t2v_magcache", "t2v_teacache", "t2v_teacache_plain",
                                            "t2v_uncached", "wan22_teacache", "wan22_uncached"}));
}
TEST(WanCache, Wan21Uncached) { check_case("t2v_uncached"); }
TEST(WanCache, Wan21TeaCacheRetSteps) { check_case("t2v_teacache"); }
TEST(WanCache, Wan21TeaCachePlain) { check_case("t2v_teacache_plain"); }
TEST(WanCache, Wan21MagCacheAsDiffusers) { check_case("t2v_magcache"); }
TEST(WanCache, Wan21FirstBlockCacheAsDiffusers) { check_case("t2v_fbcache"); }
TEST(WanCache, Wan22Uncached) { check_case("wan22_uncached"); }
TEST(WanCache, Wan22TeaCachePerExpert) { check_case("wan22_teacache"); }

TEST(WanCache, ResolveNamesTheCacheField) {
  auto t2v = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  GenerationParams p = vgen::testing::wan_t2v_call_params("wan21_t2v_tiny");
  CacheConfig tea;
  tea.cache_backend = CacheBackend::TeaCache;
  p.cache = tea;
  // The tiny model is no Wan2.1 size with published coefficients.
  std::string m = error_of([&] { t2v->resolve(p); });
  EXPECT_NE(m.find("cache_config.coefficients: TeaCache has no published coefficients"), std::string::npos) << m;
  tea.coefficients = {1.0, 0.0};
  tea.coefficients_2 = {1.0, 0.0};
  p.cache = tea;
  m = error_of([&] { t2v->resolve(p); });
  EXPECT_NE(m.find("cache_config.coefficients_2: this model has one transformer"), std::string::npos) << m;
  tea.teacache_thresh = 2.0;
  p.cache = tea;
  m = error_of([&] { t2v->resolve(p); });
  EXPECT_NE(m.find("cache_config.teacache_thresh: must be in (0, 1], got 2"), std::string::npos) << m;

  auto a14b = load_pipeline(fixture("wan22_t2v_tiny"), PipelineOptions{});
  tea = CacheConfig{};
  tea.cache_backend = CacheBackend::TeaCache;
  tea.coefficients = {1.0, 0.0};
  p.cache = tea;
  p.max_sequence_length = 64;
  m = error_of([&] { a14b->resolve(p); });
  EXPECT_NE(m.find("cache_config.coefficients_2: TeaCache on a two-expert model needs"), std::string::npos) << m;

  // The pipeline's default (the engine YAML's cache_config) applies to a request without one.
  PipelineOptions options;
  options.cache.cache_backend = CacheBackend::FirstBlockCache;
  auto with_default = load_pipeline(fixture("wan21_t2v_tiny"), options);
  p = vgen::testing::wan_t2v_call_params("wan21_t2v_tiny");
  EXPECT_EQ(with_default->resolve(p).cache.cache_backend, CacheBackend::FirstBlockCache);
  p.cache = CacheConfig{};  // a request's own setting wins: none
  EXPECT_FALSE(with_default->resolve(p).cache.enabled());
}

// diffusers' nearest_interp: round(i * (n - 1) / (length - 1)) with ties to even.
TEST(StepCache, NearestInterpAsDiffusers) {
  const std::vector<float> src = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(nearest_interp(src, 12), (std::vector<float>{0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6, 7}));
  EXPECT_EQ(nearest_interp({10, 11, 12}, 5), (std::vector<float>{10, 10, 11, 12, 12}));  // 0.5 -> 0, 1.5 -> 2
  EXPECT_EQ(nearest_interp(src, 1), (std::vector<float>{7}));
  EXPECT_DOUBLE_EQ(polyval({2.0, -1.0, 0.5}, 3.0), 2 * 9 - 3 + 0.5);
}

// The mechanism on a fake stack whose blocks each add 1: what is skipped, the residual
// reused, and max_continuous_cached_steps.
TEST(StepCache, FirstBlockCacheRulesOnAFakeStack) {
  CacheConfig c;
  c.cache_backend = CacheBackend::FirstBlockCache;
  c.threshold = 0.5;
  StepCache cache(c, 6);
  int blocks_run = 0;
  const StepCache::BlockRunner blocks = [&](const Tensor& h, int64_t begin, int64_t end) {
    blocks_run += static_cast<int>(end - begin);
    return ops::add_scalar(h, static_cast<float>(end - begin));
  };
  const Tensor h = Tensor::full({1, 2, 3}, 1.0f, DType::F32, Device::cpu());
  // Block 0's residual is 1 every call: after the first call every call skips the tail, and
  // the output is block 0's output plus the cached tail residual (2 blocks): 1 + 1 + 2.
  for (int step = 0; step < 6; ++step) {
    cache.begin_step(step);
    const Tensor out = cache.run(Branch::Conditional, 0, h, h, 3, blocks);
    EXPECT_FLOAT_EQ(out.to_vector()[0], 4.0f);
  }
  EXPECT_EQ(blocks_run, 3 + 5);
  EXPECT_EQ(cache.stats().skipped(), 5);
  EXPECT_EQ(cache.stats().summary(), "fbcache: skipped 5/6 transformer calls (cond 5/6)");

  c.max_continuous_cached_steps = 2;
  StepCache limited(c, 6);
  std::vector<bool> computed;
  for (int step = 0; step < 6; ++step) {
    limited.begin_step(step);
    limited.run(Branch::Unconditional, 0, h, h, 3, blocks);
    computed.push_back(limited.stats().decisions.back().computed);
  }
  EXPECT_EQ(computed, (std::vector<bool>{true, false, false, true, false, false}));
}
