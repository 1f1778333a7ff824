// Two pipelines in one process, each in its own ExecutionContext with other settings, share
// no hidden state: interleaved, each gives exactly what it gives alone.
#include <gtest/gtest.h>

#include "pipelines/registry.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;

namespace {

GenerationParams tiny_request(uint64_t seed) {
  GenerationParams p;
  p.prompt = "a lighthouse at dusk";
  p.height = 32;
  p.width = 48;
  p.num_frames = 5;
  p.num_inference_steps = 2;
  p.seed = seed;
  return p;
}

std::vector<float> latents_of(DiffusionPipeline& pipe, uint64_t seed) {
  return pipe.generate(pipe.resolve(tiny_request(seed))).denoised_latents.to(Device::cpu()).to_vector();
}

// Runs a and b alone (fresh pipelines), then loaded together and interleaved a, b, a, b.
void expect_interleaving_changes_nothing(const PipelineOptions& oa, const PipelineOptions& ob) {
  const std::string model = fixture("wan21_t2v_tiny");
  std::vector<float> alone_a, alone_b;
  {
    auto a = load_pipeline(model, oa);
    alone_a = latents_of(*a, 7);
  }
  {
    auto b = load_pipeline(model, ob);
    alone_b = latents_of(*b, 7);
  }
  // Different settings give different numbers, or this test could not see them mix.
  ASSERT_NE(alone_a, alone_b);

  auto a = load_pipeline(model, oa);
  auto b = load_pipeline(model, ob);
  EXPECT_NE(&a->context(), &b->context());
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    EXPECT_EQ(latents_of(*a, 7), alone_a);
    EXPECT_EQ(latents_of(*b, 7), alone_b);
  }
}

}  // namespace

TEST(PipelineContext, EachPipelineKeepsItsSettings) {
  PipelineOptions o;
  o.execution.attention_backend = "reference";
  o.execution.cuda_graphs = false;
  o.execution.conv_autotune = true;
  const auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), o);
  EXPECT_EQ(pipe->context().settings().attention_backend, "reference");
  EXPECT_FALSE(pipe->context().settings().cuda_graphs);
  EXPECT_TRUE(pipe->context().settings().conv_autotune);
  EXPECT_EQ(pipe->context().device(), Device::cpu());
  // An unknown kernel is refused where the context is built, naming the value.
  o.execution.attention_backend = "flash9";
  try {
    load_pipeline(fixture("wan21_t2v_tiny"), o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("flash9"), std::string::npos) << e.what();
  }
}

// On the CPU: float32 and bf16 pipelines side by side.
TEST(PipelineContext, Float32AndBf16PipelinesInterleaved) {
  PipelineOptions f32;
  PipelineOptions bf16;
  bf16.dtype = DType::BF16;
  expect_interleaving_changes_nothing(f32, bf16);
}

// On the GPU: the reference attention and cuDNN's side by side (bf16, where they differ).
TEST(PipelineContext, AttentionBackendsInterleavedOnGpu) {
  SKIP_WITHOUT_GPU();
  PipelineOptions reference = default_pipeline_options(vgen::testing::kGpu);
  reference.execution.attention_backend = "reference";
  PipelineOptions cudnn = reference;
  cudnn.execution.attention_backend = "cudnn";
  expect_interleaving_changes_nothing(reference, cudnn);
}

// The engine config's sections reach the pipeline options through one function (the server
// and Python both use it): every section that has an effect is applied.
TEST(PipelineContext, EngineConfigAppliesEverySection) {
  const EngineConfig c = parse_engine_config(R"(
quant_config: {quant_algo: FP8_BLOCK_SCALES, ignore: [proj_out]}
cache_config: {cache_backend: fbcache, threshold: 0.07}
attention: {backend: reference}
cuda_graph: {enabled: false}
conv: {autotune: false}
offload: {text_encoder: true, idle_expert: true}
vae: {chunk_frames: 2}
)",
                                             "engine.yaml");
  PipelineOptions o = default_pipeline_options(Device::cpu());
  apply_engine_config(c, o);
  EXPECT_EQ(o.quant.quant_algo, QuantAlgo::FP8Blockwise);
  EXPECT_EQ(o.quant.ignore, std::vector<std::string>{"proj_out"});
  EXPECT_EQ(o.cache.cache_backend, CacheBackend::FirstBlockCache);
  EXPECT_EQ(o.execution.attention_backend, "reference");
  EXPECT_FALSE(o.execution.cuda_graphs);
  EXPECT_FALSE(o.execution.conv_autotune);
  EXPECT_TRUE(o.offload_text_encoder);
  EXPECT_TRUE(o.offload_idle_expert);
  EXPECT_EQ(o.vae_chunk_frames, 2);
}
