// The engine YAML config: strict parsing (unknown keys, duplicates, types, ranges) with
// errors naming file, line and key path, and the check that rejects features not built yet.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "config/engine_config.h"
#include "core/error.h"
#include "core/execution_context.h"

using namespace vgen;

namespace {

// The vgen::Error message of parsing `yaml` (fails the test when it parses).
std::string parse_error(const std::string& yaml) {
  try {
    parse_engine_config(yaml, "engine.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "parsed without error:\n" << yaml;
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

}  // namespace

TEST(EngineConfig, EmptyIsAllDefaults) {
  for (const char* text : {"", "# nothing\n", "quant_config:\ncache_config:\n"}) {
    const EngineConfig c = parse_engine_config(text, "engine.yaml");
    EXPECT_EQ(c.quant_config.quant_algo, QuantAlgo::None);
    EXPECT_TRUE(c.quant_config.dynamic);
    EXPECT_TRUE(c.quant_config.ignore.empty());
    EXPECT_FALSE(c.quant_config.fast_accum.has_value());  // unset: on for the FP8 formats
    EXPECT_EQ(c.cache_config.cache_backend, CacheBackend::None);
    EXPECT_DOUBLE_EQ(c.cache_config.teacache_thresh, 0.2);
    EXPECT_TRUE(c.cache_config.use_ret_steps);
    EXPECT_EQ(c.parallel_config.cfg_size, 1);
    EXPECT_EQ(c.parallel_config.ulysses_size, 1);
    EXPECT_EQ(c.parallel_config.ring_size, 1);
    EXPECT_FALSE(c.parallel_config.parallel_vae);
    EXPECT_EQ(c.attention.backend, AttentionBackend::Auto);
    EXPECT_TRUE(c.cuda_graph.enabled);
    EXPECT_TRUE(c.conv.autotune);
    EXPECT_TRUE(c.gemm.autotune);
    EXPECT_TRUE(unimplemented_features(c).empty());
    EXPECT_NO_THROW(require_implemented(c, "engine.yaml"));
  }
}

TEST(EngineConfig, EverySection) {
  const EngineConfig c = parse_engine_config(R"(
quant_config:
  quant_algo: FP8_BLOCK_SCALES
  dynamic: false
  ignore: ["proj_out", "blocks.0.*"]
  fast_accum: true
cache_config:
  cache_backend: teacache
  teacache_thresh: 0.08
  use_ret_steps: false
  max_continuous_cached_steps: 3
  coefficients: [1.0e2, -2, 3.5, 0, 1]
parallel_config:
  cfg_size: 2
  ulysses_size: 4
  ring_size: 3
  parallel_vae: true
attention:
  backend: flash
cuda_graph:
  enabled: false
conv:
  autotune: false
gemm:
  autotune: false
)",
                                             "engine.yaml");
  EXPECT_EQ(c.quant_config.quant_algo, QuantAlgo::FP8Blockwise);
  EXPECT_FALSE(c.quant_config.dynamic);
  EXPECT_EQ(c.quant_config.ignore, (std::vector<std::string>{"proj_out", "blocks.0.*"}));
  EXPECT_EQ(c.quant_config.fast_accum, std::optional<bool>(true));
  EXPECT_EQ(c.cache_config.cache_backend, CacheBackend::TeaCache);
  EXPECT_DOUBLE_EQ(c.cache_config.teacache_thresh, 0.08);
  EXPECT_FALSE(c.cache_config.use_ret_steps);
  EXPECT_EQ(c.cache_config.max_continuous_cached_steps, 3);
  EXPECT_EQ(c.cache_config.coefficients, (std::vector<double>{100, -2, 3.5, 0, 1}));
  EXPECT_EQ(c.parallel_config.cfg_size, 2);
  EXPECT_EQ(c.parallel_config.ulysses_size, 4);
  EXPECT_EQ(c.parallel_config.ring_size, 3);
  EXPECT_TRUE(c.parallel_config.parallel_vae);
  EXPECT_EQ(c.attention.backend, AttentionBackend::Flash);
  EXPECT_FALSE(c.cuda_graph.enabled);
  EXPECT_FALSE(c.conv.autotune);
  EXPECT_FALSE(c.gemm.autotune);

  // What `vgen serve` does not run yet: named, not silently ignored.
  const std::vector<std::string> missing = unimplemented_features(c);
  ASSERT_EQ(missing.size(), 1u);  // parallel_config: the ranks (in `vgen serve`)
  try {
    require_implemented(c, "engine.yaml");
    ADD_FAILURE() << "accepted unimplemented features";
  } catch (const Error& e) {
    const std::string m = e.what();
    expect_contains(m, "engine.yaml: ");
    expect_contains(m, "parallel_config: 24 ranks");
  }
}

TEST(EngineConfig, EachUnimplementedValueIsRejectedAlone) {
  for (const char* text : {"parallel_config: {cfg_size: 2}", "parallel_config: {ulysses_size: 2}",
                           "parallel_config: {ring_size: 3}", "parallel_config: {cfg_size: 2, ring_size: 2}"}) {
    EXPECT_EQ(unimplemented_features(parse_engine_config(text, "engine.yaml")).size(), 1u) << text;
  }
  // What runs: the attention backends vgen has, CUDA graphs on or off.
  for (const char* text : {"attention: {backend: auto}", "attention: {backend: cudnn}", "attention: {backend: reference}", "attention: {backend: flash}",
                           "cuda_graph: {enabled: true}", "cuda_graph: {enabled: false}", "conv: {autotune: false}",
                           "quant_config: {quant_algo: FP8}", "quant_config: {quant_algo: FP8_BLOCK_SCALES}",
                           "quant_config: {quant_algo: NVFP4, dynamic: false, ignore: [proj_out]}",
                           "parallel_config: {parallel_vae: true}", "parallel_config: {cfg_size: 1, ring_size: 1}"})
    EXPECT_TRUE(unimplemented_features(parse_engine_config(text, "engine.yaml")).empty()) << text;
  // Step caching and quantization run (issues 15, 14).
  EXPECT_TRUE(unimplemented_features(parse_engine_config("cache_config: {cache_backend: teacache}\nquant_config: {dynamic: false}",
                                                         "engine.yaml"))
                  .empty());
}

TEST(EngineConfig, UnknownKeysNameTheirPathAndLine) {
  std::string m = parse_error("cache_config:\n  cache_backend: fbcache\n  treshold: 0.1\n");
  expect_contains(m, "engine.yaml:3:3: cache_config.treshold: unknown key");
  expect_contains(m, "threshold");  // the known keys are listed

  m = parse_error("quant_config: {}\nquantization: {}\n");
  expect_contains(m, "engine.yaml:2:1: quantization: unknown key");
  expect_contains(m, "cuda_graph");

  m = parse_error("conv: {autotune: yes please}\n");
  expect_contains(m, "conv.autotune");

  m = parse_error("parallel_config:\n  cfg_size: 1\n  tp_size: 2\n");
  expect_contains(m, "parallel_config.tp_size: unknown key");
  // The placeholder section's old name is refused, not ignored.
  expect_contains(parse_error("parallel: {cfg_size: 1}\n"), "parallel: unknown key");
}

TEST(EngineConfig, DuplicateKeys) {
  expect_contains(parse_error("parallel_config:\n  cfg_size: 1\n  cfg_size: 2\n"), "parallel_config.cfg_size: duplicate key");
  expect_contains(parse_error("quant_config: {}\nquant_config: {}\n"), "quant_config: duplicate key");
}

TEST(EngineConfig, WrongTypesAndRanges) {
  expect_contains(parse_error("cache_config:\n  use_ret_steps: yes\n"),
                  "engine.yaml:2:18: cache_config.use_ret_steps: expected true or false, got 'yes'");
  expect_contains(parse_error("cache_config: {teacache_thresh: abc}"), "cache_config.teacache_thresh: expected a number, got 'abc'");
  expect_contains(parse_error("cache_config: {cache_backend: teacache, teacache_thresh: 0}"),
                  "cache_config.teacache_thresh: must be in (0, 1], got 0");
  expect_contains(parse_error("cache_config: {cache_backend: fbcache, threshold: 1.5}"),
                  "cache_config.threshold: must be in (0, 1], got 1.5");
  expect_contains(parse_error("cache_config: {teacache_thresh: .nan}"), "cache_config.teacache_thresh: expected a number");
  expect_contains(parse_error("cache_config: {cache_backend: lru}"), "cache_config.cache_backend: 'lru' is not one of");
  expect_contains(parse_error("cache_config: {max_skip_steps: 1.5}"), "cache_config.max_skip_steps: expected an integer");
  expect_contains(parse_error("cache_config: {coefficients: 1.0}"), "cache_config.coefficients: expected a list");
  expect_contains(parse_error("cache_config: {cache_backend: teacache, coefficients: [1, x]}"),
                  "cache_config.coefficients[1]: expected a number");
  expect_contains(parse_error("cache_config: {cache_backend: teacache, coefficients: [1]}"),
                  "cache_config.coefficients: needs at least 2 values");
  expect_contains(parse_error("cache_config: {cache_backend: magcache}"),
                  "cache_config.mag_ratios: is required for cache_backend magcache");
  expect_contains(parse_error("cache_config: {cache_backend: magcache, mag_ratios: [1, -1]}"),
                  "cache_config.mag_ratios: must be positive");
  expect_contains(parse_error("cache_config: {cache_backend: fbcache, coefficients: [1, 2]}"),
                  "cache_config.coefficients: applies to cache_backend teacache only");
  expect_contains(parse_error("cache_config: {cache_backend: teacache, threshold: 0.1}"),
                  "cache_config.threshold: is MagCache's and First-Block-Cache's; TeaCache's is teacache_thresh");
  expect_contains(parse_error("cache_config: {cache_backend: magcache, mag_ratios: [1, 1], retention_ratio: 2}"),
                  "cache_config.retention_ratio: must be in [0, 1], got 2");
  expect_contains(parse_error("quant_config: {quant_algo: int4}"),
                  "quant_config.quant_algo: 'int4' is not one of: none, FP8, FP8_BLOCK_SCALES, NVFP4");
  expect_contains(parse_error("quant_config: {quant_algo: fp8}"), "quant_config.quant_algo: 'fp8' is not one of");
  expect_contains(parse_error("quant_config: {ignore: proj_out}"), "quant_config.ignore: expected a list");
  expect_contains(parse_error("quant_config: {ignore: [{a: 1}]}"), "quant_config.ignore[0]: expected a string");
  expect_contains(parse_error("quant_config: {ignore: ['']}"), "quant_config.ignore[0]");
  expect_contains(parse_error("quant_config: {dynamic: 1}"), "quant_config.dynamic: expected true or false");
  expect_contains(parse_error("quant_config: {quant_algo: FP8, fast_accum: 1}"),
                  "quant_config.fast_accum: expected true or false, got '1'");
  expect_contains(parse_error("quant_config: {quant_algo: FP8, fast_accum: [true]}"),
                  "quant_config.fast_accum: expected true or false");
  // Fast accumulation is the FP8 GEMMs': with no quantization or NVFP4 (W4A16) it is an error.
  expect_contains(parse_error("quant_config: {fast_accum: true}"),
                  "quant_config.fast_accum: true applies to the FP8 GEMMs only (quant_algo FP8 or FP8_BLOCK_SCALES, not none)");
  expect_contains(parse_error("quant_config: {quant_algo: NVFP4, fast_accum: true}"), "not NVFP4");
  EXPECT_NO_THROW(parse_engine_config("quant_config: {fast_accum: false}", "engine.yaml"));
  EXPECT_TRUE(parse_engine_config("quant_config: {quant_algo: FP8_BLOCK_SCALES, fast_accum: true}", "engine.yaml")
                  .quant_config.fast_accum);
  expect_contains(parse_error("gemm: {autotune: 0}"), "gemm.autotune: expected true or false, got '0'");
  expect_contains(parse_error("gemm: {autotune: on, tune: true}"), "gemm.");
  expect_contains(parse_error("gemm: {tune: true}"), "gemm.tune: unknown key");
  expect_contains(parse_error("gemm: false"), "gemm: expected a mapping");
  expect_contains(parse_error("parallel_config: {cfg_size: 3}"), "parallel_config.cfg_size: 3 is out of range [1, 2]");
  expect_contains(parse_error("vae: {chunk_frames: 0}"), "vae.chunk_frames: 0 is out of range [1, 1024]");
  expect_contains(parse_error("vae: {chunk: 2}"), "vae.chunk: unknown key");
  expect_contains(parse_error("parallel_config: {ulysses_size: 0}"), "parallel_config.ulysses_size: 0 is out of range");
  expect_contains(parse_error("parallel_config: {ulysses_size: [2]}"), "parallel_config.ulysses_size: expected an integer");
  expect_contains(parse_error("parallel_config: {ring_size: 0}"), "parallel_config.ring_size: 0 is out of range");
  expect_contains(parse_error("parallel_config: {parallel_vae: 2}"), "parallel_config.parallel_vae: expected true or false");
  expect_contains(parse_error("parallel_config: {ulysses_size: 64, ring_size: 64}"),
                  "parallel_config.ring_size: cfg_size x ulysses_size x ring_size = 4096 ranks");
  expect_contains(parse_error("linear: {quant_algo: FP8}"), "linear: unknown key");
  expect_contains(parse_error("attention: {backend: sdpa}"), "attention.backend: 'sdpa' is not one of: auto, reference");
  expect_contains(parse_error("cuda_graph: true"), "cuda_graph: expected a mapping");
  expect_contains(parse_error("- quant_config\n- cache_config\n"), "top level: expected a mapping");
}

// TaylorSeer's fields (diffusers' TaylorSeerCacheConfig names and defaults), read and refused.
TEST(EngineConfig, TaylorSeerCacheConfig) {
  const EngineConfig d = parse_engine_config("cache_config: {cache_backend: taylorseer}", "engine.yaml");
  EXPECT_EQ(d.cache_config.cache_backend, CacheBackend::TaylorSeer);
  EXPECT_EQ(d.cache_config.cache_interval, 5);
  EXPECT_EQ(d.cache_config.disable_cache_before_step, 3);
  EXPECT_FALSE(d.cache_config.disable_cache_after_step.has_value());
  EXPECT_EQ(d.cache_config.max_order, 1);
  EXPECT_EQ(d.cache_config.taylor_factors_dtype, DType::BF16);
  EXPECT_FALSE(d.cache_config.use_lite_mode);
  const EngineConfig c = parse_engine_config(R"(cache_config:
  cache_backend: taylorseer
  cache_interval: 4
  disable_cache_before_step: 2
  disable_cache_after_step: 40
  max_order: 2
  taylor_factors_dtype: float32
  use_lite_mode: false
  cache_identifiers: ['^proj_out$']
  skip_predict_identifiers: ['blocks\.\d+']
)",
                                             "engine.yaml");
  EXPECT_EQ(c.cache_config.cache_interval, 4);
  EXPECT_EQ(c.cache_config.disable_cache_before_step, 2);
  EXPECT_EQ(c.cache_config.disable_cache_after_step, 40);
  EXPECT_EQ(c.cache_config.max_order, 2);
  EXPECT_EQ(c.cache_config.taylor_factors_dtype, DType::F32);
  EXPECT_EQ(c.cache_config.cache_identifiers, (std::vector<std::string>{"^proj_out$"}));
  EXPECT_EQ(c.cache_config.skip_predict_identifiers, (std::vector<std::string>{"blocks\\.\\d+"}));
  EXPECT_NE(describe_cache_config(c.cache_config).find("taylorseer (cache_interval 4, disable_cache_before_step 2, "
                                                       "disable_cache_after_step 40, max_order 2, taylor_factors_dtype "
                                                       "float32"),
            std::string::npos)
      << describe_cache_config(c.cache_config);

  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, cache_interval: 0}"),
                  "cache_config.cache_interval: must be in [1, 1000], got 0");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, taylor_factors_dtype: fp8}"),
                  "cache_config.taylor_factors_dtype: 'fp8' is not one of: bfloat16, float16, float32");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, disable_cache_before_step: 0}"),
                  "cache_config.disable_cache_before_step: must be at least 1 with cache_interval above 1");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, max_order: 9}"),
                  "cache_config.max_order: must be in [0, 8], got 9");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, threshold: 0.1}"),
                  "cache_config.threshold: does not apply to cache_backend taylorseer");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, cache_identifiers: ['(']}"),
                  "cache_config.cache_identifiers: '(' is not a valid regular expression");
  expect_contains(parse_error("cache_config: {cache_backend: fbcache, use_lite_mode: true}"),
                  "cache_config.use_lite_mode: applies to cache_backend taylorseer only");
  expect_contains(parse_error("cache_config: {cache_backend: magcache, mag_ratios: [1, 1], disable_cache_after_step: 3}"),
                  "cache_config.disable_cache_after_step: applies to cache_backend taylorseer only");
  // Fields that have a default and one backend reads: given with another, they would be ignored.
  expect_contains(parse_error("cache_config: {cache_backend: fbcache, teacache_thresh: 0.9}"),
                  "cache_config.teacache_thresh: applies to cache_backend teacache only (cache_backend is fbcache)");
  expect_contains(parse_error("cache_config: {cache_backend: teacache, retention_ratio: 0.3}"),
                  "cache_config.retention_ratio: applies to cache_backend magcache only");
  expect_contains(parse_error("cache_config: {cache_backend: none, use_ret_steps: false}"),
                  "cache_config.use_ret_steps: applies to cache_backend teacache only");
  expect_contains(parse_error("cache_config: {cache_backend: magcache, mag_ratios: [1, 1], max_order: 2}"),
                  "cache_config.max_order: applies to cache_backend taylorseer only");
  expect_contains(parse_error("cache_config: {cache_backend: taylorseer, cache_intervall: 3}"),
                  "cache_config.cache_intervall: unknown key");
}

TEST(EngineConfig, InvalidYamlNamesTheLine) {
  expect_contains(parse_error("quant_config:\n  quant_algo: [FP8\n"), "engine.yaml:");
  expect_contains(parse_error("quant_config:\n  quant_algo: [FP8\n"), "invalid YAML");
}

TEST(EngineConfig, LoadFromFile) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / "vgen_engine_config_test.yaml";
  {
    std::ofstream out(path);
    out << "attention:\n  backend: reference\ncuda_graph:\n  enabled: false\n";
  }
  const EngineConfig c = load_engine_config(path.string());
  EXPECT_EQ(c.attention.backend, AttentionBackend::Reference);
  std::filesystem::remove(path);
  try {
    load_engine_config(path.string());
    ADD_FAILURE() << "loaded a missing file";
  } catch (const Error& e) {
    expect_contains(e.what(), path.string() + ": cannot open");
  }
}

// The quantized attention kernel is one more choice of the same key, and a context takes it
// (on a CPU context it changes nothing: the CPU's attention is exact).
TEST(EngineConfig, SageAttentionBackend) {
  const EngineConfig c = parse_engine_config("attention: {backend: sage}\n", "engine.yaml");
  EXPECT_EQ(c.attention.backend, AttentionBackend::Sage);
  EXPECT_EQ(attention_backend_name(c.attention.backend), "sage");
  const ExecutionSettings s = execution_settings(c, ExecutionSettings{});
  EXPECT_EQ(s.attention_backend, "sage");
  EXPECT_NO_THROW(ExecutionContext(Device::cpu(), s));
  try {
    parse_engine_config("attention: {backend: sage2}\n", "engine.yaml");
    ADD_FAILURE() << "took an unknown attention backend";
  } catch (const Error& e) {
    expect_contains(e.what(), "sage");
  }
}

// The attention, cuda_graph, conv and gemm sections become the pipeline's ExecutionSettings,
// over the base the front end passes; settings the file has no say in stay as the base has them.
TEST(EngineConfig, ExecutionSettingsFromTheSections) {
  ExecutionSettings base;
  base.attention_backend = "cudnn";
  base.allow_tf32 = false;
  base.profile_ops = true;
  const ExecutionSettings s = execution_settings(
      parse_engine_config("attention: {backend: reference}\ncuda_graph: {enabled: false}\nconv: {autotune: false}\n"
                          "gemm: {autotune: false}\n",
                          "engine.yaml"),
      base);
  EXPECT_FALSE(s.gemm_autotune);
  EXPECT_EQ(s.attention_backend, "reference");
  EXPECT_FALSE(s.cuda_graphs);
  EXPECT_FALSE(s.conv_autotune);
  EXPECT_FALSE(s.allow_tf32);
  EXPECT_TRUE(s.profile_ops);

  // An empty file: the sections' defaults (graphs on, autotuned convolutions, as a server
  // wants), and `auto` attention leaves the base's (the environment's) choice.
  const ExecutionSettings d = execution_settings(parse_engine_config("", "engine.yaml"), base);
  EXPECT_EQ(d.attention_backend, "cudnn");
  EXPECT_TRUE(d.cuda_graphs);
  EXPECT_TRUE(d.conv_autotune);
  EXPECT_TRUE(d.gemm_autotune);
  // GEMM autotuning is off when either says so: the section's default keeps the base's (the
  // environment's VGEN_GEMM_AUTOTUNE=0) off.
  base.gemm_autotune = false;
  EXPECT_FALSE(execution_settings(parse_engine_config("", "engine.yaml"), base).gemm_autotune);
  EXPECT_FALSE(execution_settings(parse_engine_config("gemm: {autotune: true}", "engine.yaml"), base).gemm_autotune);
}

TEST(EngineConfig, QuantFlagsSpellings) {
  EXPECT_EQ(parse_quant_algo("FP8", "--quant-algo"), QuantAlgo::FP8);
  EXPECT_EQ(parse_quant_algo("FP8_BLOCK_SCALES", "--quant-algo"), QuantAlgo::FP8Blockwise);
  EXPECT_EQ(parse_quant_algo("NVFP4", "--quant-algo"), QuantAlgo::NVFP4);
  EXPECT_EQ(parse_quant_algo("none", "--quant-algo"), QuantAlgo::None);
  EXPECT_EQ(parse_linear_type("trtllm-fp8-per-tensor", "--linear-type"), QuantAlgo::FP8);
  EXPECT_EQ(parse_linear_type("trtllm-fp8-blockwise", "--linear-type"), QuantAlgo::FP8Blockwise);
  EXPECT_EQ(parse_linear_type("trtllm-nvfp4", "--linear-type"), QuantAlgo::NVFP4);
  EXPECT_EQ(parse_linear_type("default", "--linear-type"), QuantAlgo::None);
  try {
    parse_linear_type("trtllm-int4", "--linear-type");
    ADD_FAILURE() << "accepted trtllm-int4";
  } catch (const Error& e) {
    expect_contains(e.what(), "--linear-type: 'trtllm-int4' is not one of: default, trtllm-fp8-per-tensor");
  }
}
