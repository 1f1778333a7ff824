// FLUX.1's text encoders on the GPU (CLIPTextModel, T5EncoderModel) against transformers'
// float32 references (tests/fixtures/flux_text_tiny) and against the same model on the CPU.
// Skipped where no CUDA device is found.
//
// float32 on the GPU is held to the CPU's bound (1e-5 relative L2: true FP32 GEMMs, no TF32);
// bf16 on the GPU must agree with bf16 on the CPU to bf16 rounding (both round the same
// weights; only summation order differs), and stay as close to the float32 reference as the
// CPU's bf16 run, with 25% slack.
#include <gtest/gtest.h>

#include <cstdio>

#include "support/gpu.h"
#include "support/parity.h"
#include "text/clip_text_model.h"
#include "text/t5_encoder.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

double rel(const Tensor& got, const Tensor& want) {
  return rel_l2(got.to(Device::cpu()).to(DType::F32), want.to(Device::cpu()).to(DType::F32));
}

}  // namespace

TEST(FluxTextGpu, ClipTextModelMatchesCpuAndTransformers) {
  SKIP_WITHOUT_GPU();
  vgen::testing::ScopedContext scope(kGpu, vgen::testing::with_tf32(false));
  const WeightStore ref = reference("flux_text_tiny/reference/text_encoders.safetensors");
  const Tensor ids = ref.get("clip_input_ids");
  const auto gpu = CLIPTextModel::from_pretrained(fixture("flux_text_tiny/text_encoder"), DType::F32, kGpu);
  const CLIPTextModelOutput out = gpu->forward(ids.to(kGpu));
  EXPECT_TRUE(out.last_hidden_state.device().is_cuda());
  const double e1 = rel(out.last_hidden_state, ref.get("clip_last_hidden_state"));
  const double e2 = rel(out.pooler_output, ref.get("clip_pooler_output"));
  std::printf("[ CLIPTextModel f32 on cuda ] last_hidden_state %.3g, pooler_output %.3g\n", e1, e2);
  EXPECT_LT(e1, 1e-5);
  EXPECT_LT(e2, 1e-5);

  const auto gpu16 = CLIPTextModel::from_pretrained(fixture("flux_text_tiny/text_encoder"), DType::BF16, kGpu);
  const auto cpu16 = CLIPTextModel::from_pretrained(fixture("flux_text_tiny/text_encoder"), DType::BF16);
  const Tensor g = gpu16->forward(ids.to(kGpu)).pooler_output, c = cpu16->forward(ids).pooler_output;
  EXPECT_EQ(g.dtype(), DType::BF16);
  const double vs_cpu = rel(g, c), g32 = rel(g, ref.get("clip_pooler_output")), c32 = rel(c, ref.get("clip_pooler_output"));
  std::printf("[ CLIPTextModel bf16 pooler_output ] cuda vs cpu %.3g; vs float32: cuda %.3g, cpu %.3g\n", vs_cpu, g32, c32);
  EXPECT_LT(vs_cpu, 2e-2);
  EXPECT_LT(g32, 1.25 * c32 + 1e-3);
}

TEST(FluxTextGpu, T5EncoderMatchesCpuAndTransformers) {
  SKIP_WITHOUT_GPU();
  vgen::testing::ScopedContext scope(kGpu, vgen::testing::with_tf32(false));
  const WeightStore ref = reference("flux_text_tiny/reference/text_encoders.safetensors");
  const auto gpu = T5EncoderModel::from_pretrained(fixture("flux_text_tiny/text_encoder_2"), DType::F32, kGpu);
  const Tensor out = gpu->forward(ref.get("t5_input_ids").to(kGpu));
  EXPECT_TRUE(out.device().is_cuda());
  const Tensor masked =
      gpu->forward(ref.get("t5_masked_input_ids").to(kGpu), ref.get("t5_masked_attention_mask").to(kGpu));
  const double e1 = rel(out, ref.get("t5_last_hidden_state"));
  const double e2 = rel(masked, ref.get("t5_masked_last_hidden_state"));
  std::printf("[ T5EncoderModel f32 on cuda ] 512 no mask %.3g, 64 masked %.3g\n", e1, e2);
  EXPECT_LT(e1, 1e-5);
  EXPECT_LT(e2, 1e-5);

  const auto gpu16 = T5EncoderModel::from_pretrained(fixture("flux_text_tiny/text_encoder_2"), DType::BF16, kGpu);
  const auto cpu16 = T5EncoderModel::from_pretrained(fixture("flux_text_tiny/text_encoder_2"), DType::BF16);
  const Tensor g = gpu16->forward(ref.get("t5_input_ids").to(kGpu)), c = cpu16->forward(ref.get("t5_input_ids"));
  EXPECT_EQ(g.dtype(), DType::BF16);
  const double vs_cpu = rel(g, c), g32 = rel(g, ref.get("t5_last_hidden_state")),
               c32 = rel(c, ref.get("t5_last_hidden_state"));
  std::printf("[ T5EncoderModel bf16 ] cuda vs cpu %.3g; vs float32: cuda %.3g, cpu %.3g\n", vs_cpu, g32, c32);
  EXPECT_LT(vs_cpu, 2e-2);
  EXPECT_LT(g32, 1.25 * c32 + 1e-3);
}
