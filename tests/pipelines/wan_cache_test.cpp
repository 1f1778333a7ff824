// Step caching (issue 15) on the tiny Wan fixtures against diffusers: MagCache,
// First-Block-Cache and TaylorSeer as diffusers' hooks run them, TeaCache as the published rule applied
// around diffusers' transformer (tools/fixtures/make_wan_cache_fixtures.py). Each case's
// decisions (which transformer calls ran the block stack) must equal the reference's, call
// by call, and its denoised latents must match. Also: the mechanism's own rules on a fake
// block stack, and the errors of resolve() naming the cache_config field.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/config_reader.h"
#include "io/json.h"
#include "ops/ops.h"
#include "models/wan/transformer_wan.h"
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

// One case of cases.json: its decisions call by call and its latents (relative L2 below 1e-4,
// or the case's rel_l2_bound: 3x how far diffusers' own run moves for a 1e-6 input change, for
// a run that float noise moves further). expect_skips: the case skips some calls (not all);
// false for a cache that diffusers runs without skipping.
void check_case(const std::string& key, bool expect_skips = true) {
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
    if (expect_skips) {
      EXPECT_GT(skipped, 0);  // the fixture's thresholds skip some calls, not all
      EXPECT_LT(skipped, static_cast<int>(want.size()));
    }
    EXPECT_NE(out.cache.summary().find("skipped " + std::to_string(skipped) + "/" + std::to_string(want.size())),
              std::string::npos)
        << out.cache.summary();
  } else {
    EXPECT_FALSE(out.cache.enabled());
  }
  const double err = rel_l2(out.denoised_latents, vgen::testing::reference("wan_cache_ref/references.safetensors").get(key));
  EXPECT_LT(err, c.value("rel_l2_bound", 1e-4));
  std::printf("[%s] %s; denoised latents rel L2 %.2e\n", key.c_str(), cached ? out.cache.summary().c_str() : "no cache",
              err);
}

}  // namespace

// One test per case (each a full 12-step generation): every case of cases.json is listed here.
TEST(WanCache, CasesAreAllTested) {
  std::vector<std::string> keys;
  for (const auto& [key, c] : cache_cases().at("cases").items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"t2v_fbcache", "t2v_magcache", "t2v_magcache_one_ratio", "t2v_taylorseer", "t2v_taylorseer_bf16",
                                            "t2v_taylorseer_default", "t2v_teacache", "t2v_teacache_plain",
                                            "t2v_teacache_signed", "t2v_uncached", "wan22_taylorseer", "wan22_teacache", "wan22_uncached"}));
}
TEST(WanCache, Wan21Uncached) { check_case("t2v_uncached"); }
TEST(WanCache, Wan21TeaCacheRetSteps) { check_case("t2v_teacache"); }
TEST(WanCache, Wan21TeaCachePlain) { check_case("t2v_teacache_plain"); }
// Rescaled distances below 0 are added as they are (np.poly1d in TeaCache4Wan2.1), not as |.|.
TEST(WanCache, Wan21TeaCacheSignedDistances) { check_case("t2v_teacache_signed"); }
TEST(WanCache, Wan21MagCacheAsDiffusers) { check_case("t2v_magcache"); }
// One ratio, repeated over the steps by diffusers' nearest_interp.
TEST(WanCache, Wan21MagCacheOneRatioAsDiffusers) { check_case("t2v_magcache_one_ratio"); }
TEST(WanCache, Wan21FirstBlockCacheAsDiffusers) { check_case("t2v_fbcache"); }
TEST(WanCache, Wan22Uncached) { check_case("wan22_uncached"); }
TEST(WanCache, Wan22TeaCachePerExpert) { check_case("wan22_teacache"); }
// TaylorSeer: use_lite_mode (proj_out predicted to order 2, float32 factors; then order 1 with
// the default bfloat16 factors), per expert on Wan2.2, and the default config, which hooks no
// module of WanTransformer3DModel in diffusers (every call computed, the uncached latents).
TEST(WanCache, Wan21TaylorSeerLiteAsDiffusers) { check_case("t2v_taylorseer"); }
// bfloat16 factors round each computed output to 8 bits: a float32 difference far below the
// ulp flips some roundings, and the denoising feeds them back, so this run is ill-conditioned at
// float noise: diffusers' own run moves by 2.6e-3 (relative L2) when its input latents change
// by 1e-6 (relative; cases.json float_noise_rel_l2), and vgen's differs from it by 2.9e-3, within
// the case's bound (3x that). The rounding arithmetic itself is checked bit for bit against
// diffusers' TaylorSeerState in StepCache.TaylorSeerFactorsBitExactAsDiffusers.
TEST(WanCache, Wan21TaylorSeerBf16FactorsAsDiffusers) {
  const Json& c = cache_cases().at("cases").at("t2v_taylorseer_bf16");
  EXPECT_LT(c.at("rel_l2_bound").get<double>(), 1e-2);
  check_case("t2v_taylorseer_bf16");
}
TEST(WanCache, Wan21TaylorSeerDefaultHooksNothingAsDiffusers) {
  check_case("t2v_taylorseer_default", /*expect_skips=*/false);
  const WeightStore ref = vgen::testing::reference("wan_cache_ref/references.safetensors");
  EXPECT_EQ(rel_l2(ref.get("t2v_taylorseer_default"), ref.get("t2v_uncached")), 0.0);
}
TEST(WanCache, Wan22TaylorSeerPerExpert) { check_case("wan22_taylorseer"); }

// The module names TaylorSeer's identifiers are matched against are diffusers' named_modules()
// of each fixture's transformer (T2V, I2V with the image embedder and added K/V, Wan2.2).
TEST(WanCache, TaylorSeerModuleNamesAreDiffusers) {
  const Json& names = cache_cases().at("module_names");
  ASSERT_GE(names.size(), 3u);
  for (const auto& [name, want] : names.items()) {
    SCOPED_TRACE(name);
    const std::string path = fixture(name + "/transformer/config.json");
    const WanTransformer3DModelConfig c = WanTransformer3DModelConfig::from_json(read_json_file(path), path);
    EXPECT_EQ(WanTransformer3DModel::module_names(c), want.get<std::vector<std::string>>());
  }
}

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

  // An engine cache_config that no request could run fails the load (a server does not start),
  // naming the field; with coefficients given it loads.
  options.cache = CacheConfig{};
  options.cache.cache_backend = CacheBackend::TeaCache;
  m = error_of([&] { load_pipeline(fixture("wan21_t2v_tiny"), options); });
  EXPECT_NE(m.find("cache_config.coefficients: TeaCache has no published coefficients"), std::string::npos) << m;
  m = error_of([&] { load_pipeline(fixture("wan22_t2v_tiny"), options); });
  EXPECT_NE(m.find("cache_config.coefficients"), std::string::npos) << m;
  options.cache.coefficients = {1.0, 0.0};
  p.cache.reset();
  EXPECT_EQ(load_pipeline(fixture("wan21_t2v_tiny"), options)->resolve(p).cache.cache_backend, CacheBackend::TeaCache);
}

// diffusers' nearest_interp: round(i * (n - 1) / (length - 1)) with ties to even.
TEST(StepCache, NearestInterpAsDiffusers) {
  const std::vector<float> src = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(nearest_interp(src, 12), (std::vector<float>{0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6, 7}));
  EXPECT_EQ(nearest_interp({10, 11, 12}, 5), (std::vector<float>{10, 10, 11, 12, 12}));  // 0.5 -> 0, 1.5 -> 2
  EXPECT_EQ(nearest_interp(src, 1), (std::vector<float>{7}));
  // One ratio is repeated (diffusers: scale 0, every index 0); MagCacheConfig takes one.
  EXPECT_EQ(nearest_interp({1.2f}, 4), (std::vector<float>{1.2f, 1.2f, 1.2f, 1.2f}));
  CacheConfig one;
  one.cache_backend = CacheBackend::MagCache;
  one.mag_ratios = {1.2};
  EXPECT_FALSE(one.problem().has_value());
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
    const Tensor out = cache.run(Branch::Conditional, 0, h, {h, h}, 3, blocks);
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
    limited.run(Branch::Unconditional, 0, h, {h, h}, 3, blocks);
    computed.push_back(limited.stats().decisions.back().computed);
  }
  EXPECT_EQ(computed, (std::vector<bool>{true, false, false, true, false, false}));
}

// TaylorSeer's schedule and extrapolation on a fake forward whose output is linear, then
// quadratic, in the call index (values worked out by hand: a first-order expansion continues
// a line exactly, a second-order one a parabola).
TEST(StepCache, TaylorSeerScheduleAndExpansion) {
  const std::vector<std::string> names = {"", "blocks", "blocks.0", "norm_out", "proj_out"};
  CacheConfig c;
  c.cache_backend = CacheBackend::TaylorSeer;
  c.use_lite_mode = true;
  c.cache_interval = 3;
  c.disable_cache_before_step = 2;
  c.taylor_factors_dtype = DType::F32;
  StepCache cache(c, 10, names);
  EXPECT_EQ(cache.taylorseer_hooks().cached, (std::vector<std::string>{"proj_out"}));
  EXPECT_EQ(cache.taylorseer_hooks().skipped, (std::vector<std::string>{"blocks.0"}));
  int call = 0, forwards = 0;
  const auto line = [&] {
    ++forwards;
    return Tensor::full({2, 3}, 2.0f * static_cast<float>(call) + 1.0f, DType::F32, Device::cpu());
  };
  std::vector<bool> computed;
  for (call = 0; call < 10; ++call) {
    cache.begin_step(call);
    const Tensor out = cache.run_output(Branch::Conditional, 0, line);
    EXPECT_FLOAT_EQ(out.to_vector()[5], 2.0f * static_cast<float>(call) + 1.0f) << "call " << call;
    computed.push_back(cache.stats().decisions.back().computed);
  }
  // Computed: calls 0, 1 (warm-up), then (c - 2 - 1) % 3 == 0: 3, 6, 9.
  EXPECT_EQ(computed, (std::vector<bool>{true, true, false, true, false, false, true, false, false, true}));
  EXPECT_EQ(forwards, 5);
  EXPECT_EQ(cache.stats().summary(), "taylorseer: skipped 5/10 transformer calls (cond 5/10)");

  // max_order 2 on c^2: factors after calls 0, 1, 3 are 9, (9 - 1) / 2 = 4, (4 - 1) / 2 = 1.5;
  // at call 4 (offset 1): 9 + 4 + 1.5 / 2 = 13.75; at call 5 (offset 2): 9 + 8 + 1.5 * 2 = 20.
  c.max_order = 2;
  c.disable_cache_after_step = 6;  // calls 6.. computed
  StepCache quadratic(c, 8, names);
  const auto square = [&] { return Tensor::full({1}, static_cast<float>(call * call), DType::F32, Device::cpu()); };
  std::vector<float> got;
  for (call = 0; call < 8; ++call) got.push_back(quadratic.run_output(Branch::Unconditional, 0, square).to_vector()[0]);
  EXPECT_EQ(got, (std::vector<float>{0, 1, 2, 9, 13.75f, 20, 36, 49}));  // call 2 from the line 0 -> 1

  // bfloat16 factors: the output 1/3 is stored rounded, 0.333984375; order 1 is 1/3 minus that
  // (in float32), rounded to -0.000652313232421875; call 2 adds them: 0.3333320617675781
  // (torch gives the same, not 1/3).
  CacheConfig b = c;
  b.max_order = 1;
  b.disable_cache_after_step.reset();
  b.taylor_factors_dtype = DType::BF16;
  StepCache rounded(b, 3, names);
  const auto third = [&] { return Tensor::full({1}, 1.0f / 3.0f, DType::F32, Device::cpu()); };
  for (call = 0; call < 3; ++call) got[static_cast<size_t>(call)] = rounded.run_output(Branch::Conditional, 0, third).to_vector()[0];
  EXPECT_EQ(got[2], 0.333984375f - 0.000652313232421875f);
  EXPECT_EQ(got[2], 0.3333320617675781f);
}

// Which modules diffusers' identifiers hook, and the configurations vgen refuses, naming the field.
TEST(StepCache, TaylorSeerHooksAsDiffusersResolvesThem) {
  WanTransformer3DModelConfig w;
  w.num_layers = 2;
  const std::vector<std::string> names = WanTransformer3DModel::module_names(w);
  CacheConfig c;
  c.cache_backend = CacheBackend::TaylorSeer;
  // The default identifiers ("^blocks.*attn" in full) match none of blocks.N.attn1 / attn2.
  TaylorSeerHooks h = resolve_taylorseer_hooks(c, names);
  EXPECT_TRUE(h.cached.empty());
  EXPECT_TRUE(h.skipped.empty());
  c.use_lite_mode = true;
  h = resolve_taylorseer_hooks(c, names);
  EXPECT_EQ(h.cached, (std::vector<std::string>{"proj_out"}));
  EXPECT_EQ(h.skipped, (std::vector<std::string>{"blocks.0", "blocks.1"}));
  c.use_lite_mode = false;
  c.cache_identifiers = {"proj_out"};
  c.skip_predict_identifiers = {"blocks\\.\\d+\\.ffn", "norm_out"};
  h = resolve_taylorseer_hooks(c, names);
  EXPECT_EQ(h.cached, (std::vector<std::string>{"proj_out"}));
  EXPECT_EQ(h.skipped, (std::vector<std::string>{"blocks.0.ffn", "blocks.1.ffn", "norm_out"}));

  c.skip_predict_identifiers.clear();
  c.cache_identifiers = {"blocks\\.\\d+\\.attn\\d"};
  std::string m = error_of([&] { resolve_taylorseer_hooks(c, names); });
  EXPECT_NE(m.find("cache_config.cache_identifiers: they match the module 'blocks.0.attn1'"), std::string::npos) << m;
  c.cache_identifiers = {".*"};
  m = error_of([&] { resolve_taylorseer_hooks(c, names); });
  EXPECT_NE(m.find("'(the whole model)'"), std::string::npos) << m;
  c.cache_identifiers = {"proj_out"};
  c.skip_predict_identifiers = {"patch_embedding"};
  m = error_of([&] { resolve_taylorseer_hooks(c, names); });
  EXPECT_NE(m.find("cache_config.skip_predict_identifiers: they match 'patch_embedding'"), std::string::npos) << m;
  c.cache_identifiers.clear();
  c.skip_predict_identifiers = {"blocks\\.0"};
  m = error_of([&] { resolve_taylorseer_hooks(c, names); });
  EXPECT_NE(m.find("cache_config.skip_predict_identifiers: they match 'blocks.0' but no module is predicted"),
            std::string::npos)
      << m;
  // proj_out both skipped and cached is skipped (diffusers' precedence): nothing predicted.
  c.cache_identifiers = {"proj_out"};
  c.skip_predict_identifiers = {"proj_out"};
  m = error_of([&] { resolve_taylorseer_hooks(c, names); });
  EXPECT_NE(m.find("no module is predicted"), std::string::npos) << m;

  // The pipeline refuses them at resolve, naming the field.
  auto t2v = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  GenerationParams p = vgen::testing::wan_t2v_call_params("wan21_t2v_tiny");
  CacheConfig bad;
  bad.cache_backend = CacheBackend::TaylorSeer;
  bad.cache_identifiers = {"blocks\\.0\\.attn1"};
  p.cache = bad;
  m = error_of([&] { t2v->resolve(p); });
  EXPECT_NE(m.find("cache_config.cache_identifiers: they match the module 'blocks.0.attn1'"), std::string::npos) << m;
}

// diffusers' TaylorSeerState alone (tools/fixtures/make_wan_cache_fixtures.py
// taylor_state_references): the same computed outputs through StepCache::run_output give the
// same predictions bit for bit, with bfloat16 and float16 factors of order 2.
TEST(StepCache, TaylorSeerFactorsBitExactAsDiffusers) {
  const Json& t = cache_cases().at("taylor_state");
  const WeightStore ref = vgen::testing::reference("wan_cache_ref/references.safetensors");
  CacheConfig c;
  c.cache_backend = CacheBackend::TaylorSeer;
  c.use_lite_mode = true;
  c.cache_interval = t.at("cache_interval").get<int>();
  c.disable_cache_before_step = t.at("disable_cache_before_step").get<int>();
  c.max_order = t.at("max_order").get<int>();
  for (const auto& [name, predicted] : t.at("predicted").items()) {
    SCOPED_TRACE(name);
    c.taylor_factors_dtype = *parse_taylor_factors_dtype(name);
    StepCache cache(c, 8, {"", "blocks", "blocks.0", "norm_out", "proj_out"});
    int checked = 0;
    for (int call = 0; call < 8; ++call) {
      const std::string key = std::to_string(call);
      const bool computed = t.at("inputs").contains(key);
      const Tensor out = cache.run_output(Branch::Conditional, 0, [&] {
        EXPECT_TRUE(computed) << "call " << call << " ran its forward";
        return ref.get(t.at("inputs").at(key).get<std::string>());
      });
      EXPECT_EQ(cache.stats().decisions.back().computed, computed) << "call " << call;
      if (computed) continue;
      EXPECT_EQ(out.to_vector(), ref.get(predicted.at(key).get<std::string>()).to_vector()) << "call " << call;
      ++checked;
    }
    EXPECT_EQ(checked, 4);
  }
}
