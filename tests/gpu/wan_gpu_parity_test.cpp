// The Wan2.1 models and pipeline on the GPU against the same diffusers/transformers
// references the CPU tests use (tests/fixtures/*_ref). Skipped where no CUDA device is found.
//
// float32 on the GPU is held to the CPU's float32 bounds (true FP32 GEMMs, no TF32); bf16 to
// the references' own bf16 runs: no further from the float32 reference than diffusers'
// (transformers') bf16 output, with the slack the CPU bf16 tests allow.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/checkpoint.h"
#include "io/json.h"
#include "media/frames.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/transformer_wan.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#include "support/gpu.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"
#include "text/umt5_encoder.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::expect_as_close_as_diffusers_bf16;
using vgen::testing::rel_l2;

namespace {


double rel(const Tensor& got, const Tensor& want) { return rel_l2(got.to(Device::cpu()).to(DType::F32), want); }

}  // namespace

TEST(WanGpu, TransformerFloat32MatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  for (const char* name : {"wan21_t2v_tiny", "wan21_t2v_tiny_b"}) {
    const auto model = WanTransformer3DModel::from_pretrained(fixture(std::string(name) + "/transformer"), DType::F32, kGpu);
    const WeightStore ref = reference(std::string(name) + "_ref/transformer.safetensors");
    const Tensor out =
        model->forward(ref.get("hidden_states").to(kGpu), ref.get("timestep"), ref.get("encoder_hidden_states").to(kGpu));
    EXPECT_TRUE(out.device().is_cuda());
    const double err = rel(out, ref.get("sample"));
    std::printf("[ %s transformer f32 on cuda ] rel L2 %.3g\n", name, err);
    EXPECT_LT(err, 1e-5) << name;
  }
}

TEST(WanGpu, TransformerBf16AsCloseAsDiffusersBf16) {
  SKIP_WITHOUT_GPU();
  const auto model = WanTransformer3DModel::from_pretrained(fixture("wan21_t2v_tiny/transformer"), DType::BF16, kGpu);
  const WeightStore ref = reference("wan21_t2v_tiny_ref/transformer.safetensors");
  const WeightStore extra = reference("wan21_t2v_tiny_ref/transformer_extra.safetensors");
  const Tensor out =
      model->forward(ref.get("hidden_states").to(kGpu), ref.get("timestep"), ref.get("encoder_hidden_states").to(kGpu));
  EXPECT_EQ(out.dtype(), DType::BF16);
  expect_as_close_as_diffusers_bf16("transformer bf16 on cuda", out, ref.get("sample"), extra.get("sample_bf16"));
}

TEST(WanGpu, VaeDecodeMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  // float32 convolutions in true FP32 (the default allows TF32, as PyTorch does).
  const vgen::testing::ScopedContext exact(kGpu, vgen::testing::with_tf32(false));
  for (const char* name : {"wan21_t2v_tiny", "wan21_t2v_tiny_b"}) {
    const auto vae = AutoencoderKLWan::from_pretrained(fixture(std::string(name) + "/vae"), DType::F32, kGpu);
    const WeightStore ref = reference(std::string(name) + "_ref/vae.safetensors");
    const Tensor video = vae->decode(ref.get("z").to(kGpu));
    const double err = rel(video, ref.get("video"));
    std::printf("[ %s VAE f32 on cuda ] rel L2 %.3g\n", name, err);
    EXPECT_LT(err, 1e-5) << name;
  }
}

TEST(WanGpu, Umt5MatchesTransformers) {
  SKIP_WITHOUT_GPU();
  const WeightStore text = reference("wan21_t2v_tiny_ref/text.safetensors");
  const WeightStore extra = reference("wan21_t2v_tiny_ref/text_extra.safetensors");
  const Tensor f32 = text.get("last_hidden_state");
  {
    const auto model = UMT5EncoderModel::from_pretrained(fixture("wan21_t2v_tiny/text_encoder"), DType::F32, kGpu);
    const double err = rel(model->forward(text.get("input_ids"), text.get("attention_mask")), f32);
    std::printf("[ UMT5 f32 on cuda ] rel L2 %.3g\n", err);
    EXPECT_LT(err, 1e-5);
  }
  {
    const auto model = UMT5EncoderModel::from_pretrained(fixture("wan21_t2v_tiny/text_encoder"), DType::BF16, kGpu);
    const Tensor out = model->forward(text.get("input_ids"), text.get("attention_mask"));
    const Tensor torch_bf16 = extra.get("last_hidden_state_bf16").to(DType::F32);
    const double ours = rel(out, f32), theirs = rel_l2(torch_bf16, f32);
    std::printf("[ UMT5 bf16 on cuda ] vs float32: vgen %.3g, transformers bf16 %.3g\n", ours, theirs);
    EXPECT_LT(rel(out, torch_bf16), 2e-2);
    EXPECT_LT(ours, 1.5 * theirs);
  }
}

// The whole pipeline from diffusers' initial latents: float32 to the CPU's bounds; bf16 (the
// GPU default: bf16 transformer and text encoder, float32 VAE) no further from diffusers'
// float32 run than vgen's own CPU bf16 run is, with 50% slack for the other summation orders.
TEST(WanGpu, PipelineMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const std::string name = "wan21_t2v_tiny";
  const WeightStore ref = reference(name + "_ref/pipeline.safetensors");
  const GenerationParams p = vgen::testing::wan_t2v_call_params(name);  // guidance 5
  const Tensor want = ref.get("denoised_latents");

  auto run = [&](Device device, DType dtype) {
    PipelineOptions o;
    o.device = device;
    o.dtype = dtype;
    o.execution.allow_tf32 = false;  // float32 convolutions in true FP32 (PyTorch's default allows TF32)
    auto pipe = load_pipeline(fixture(name), o);
    return pipe->generate(pipe->resolve(p));
  };
  const GenerationOutput f32 = run(kGpu, DType::F32);
  const double f32_err = rel(f32.denoised_latents, want);
  const double frame_err = max_abs_diff(media::video_to_float_frames(f32.video.to(Device::cpu())), ref.get("frames_float"));
  std::printf("[ pipeline f32 on cuda ] latents rel L2 %.3g, frames max abs %.3g\n", f32_err, frame_err);
  EXPECT_LT(f32_err, 1e-4);
  EXPECT_LT(frame_err, 1e-4);

  const GenerationOutput gpu_bf16 = run(kGpu, DType::BF16);
  const GenerationOutput cpu_bf16 = run(Device::cpu(), DType::BF16);
  const double ours = rel(gpu_bf16.denoised_latents, want), cpu = rel(cpu_bf16.denoised_latents, want);
  std::printf("[ pipeline bf16 ] latents rel L2 vs diffusers float32: cuda %.3g, cpu %.3g\n", ours, cpu);
  EXPECT_LT(ours, 1.5 * cpu + 1e-3);
  EXPECT_EQ(gpu_bf16.frames.shape(), f32.frames.shape());
}
