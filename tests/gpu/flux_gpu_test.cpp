// FluxTransformer2DModel and AutoencoderKL on the GPU, against the diffusers float32 references
// of tools/fixtures/make_flux_fixtures.py and vgen's own CPU runs. Skipped where no CUDA device
// is found.
//
// float32 (TF32 off) is held to the CPU's float32 bound against diffusers (1e-5); bf16 to "no
// further from diffusers' float32 output than vgen's CPU bf16 run", with 50% slack for the
// other summation orders (cuBLASLt / cuDNN / the attention kernel vs the CPU's).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "models/autoencoder_kl/autoencoder_kl.h"
#include "models/flux/transformer_flux.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

double rel(const Tensor& got, const Tensor& want) { return rel_l2(got.to(Device::cpu()).to(DType::F32), want); }

// run(device, dtype) -> output, compared with `want` on the GPU in float32 and bf16 and on the CPU in bf16.
void expect_gpu_matches(const std::string& tag, const Tensor& want,
                        const std::function<Tensor(Device, DType)>& run) {
  const double f32 = rel(run(kGpu, DType::F32), want);
  const double gpu_bf16 = rel(run(kGpu, DType::BF16), want), cpu_bf16 = rel(run(Device::cpu(), DType::BF16), want);
  std::printf("[ %s on cuda ] rel L2 vs diffusers float32: f32 %.3g; bf16 %.3g (cpu bf16 %.3g)\n", tag.c_str(), f32,
              gpu_bf16, cpu_bf16);
  EXPECT_LT(f32, 1e-5) << tag;
  EXPECT_LT(gpu_bf16, 1.5 * cpu_bf16 + 1e-3) << tag;
}

}  // namespace

TEST(FluxGpu, TransformerMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const vgen::testing::ScopedContext exact(kGpu, vgen::testing::with_tf32(false));
  for (const auto& [name, guidance] : {std::pair{"flux_dev_tiny", true}, std::pair{"flux_schnell_tiny", false}}) {
    const WeightStore ref = reference(std::string(name) + "_ref/transformer.safetensors");
    expect_gpu_matches(std::string(name) + " transformer", ref.get("sample"), [&](Device device, DType dtype) {
      const auto model =
          FluxTransformer2DModel::from_pretrained(fixture(std::string(name) + "/transformer"), dtype, device);
      return model->forward(ref.get("hidden_states").to(device), ref.get("encoder_hidden_states").to(device),
                            ref.get("pooled_projections").to(device), ref.get("timestep"), ref.get("img_ids"),
                            ref.get("txt_ids"), guidance ? ref.get("guidance") : Tensor());
    });
  }
}

TEST(FluxGpu, VaeMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const vgen::testing::ScopedContext exact(kGpu, vgen::testing::with_tf32(false));
  const WeightStore ref = reference("flux_dev_tiny_ref/vae.safetensors");
  const std::string dir = fixture("flux_dev_tiny/vae");
  expect_gpu_matches("AutoencoderKL decode", ref.get("decoded"), [&](Device device, DType dtype) {
    return AutoencoderKL::from_pretrained(dir, dtype, device)->decode(ref.get("latents").to(device));
  });
  expect_gpu_matches("AutoencoderKL encode (mean)", ref.get("latent_mean"), [&](Device device, DType dtype) {
    return AutoencoderKL::from_pretrained(dir, dtype, device)->encode(ref.get("image").to(device)).mean;
  });
}
