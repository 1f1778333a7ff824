// AutoencoderKLWan's encode (Wan2.1 and Wan2.2) and the Wan2.2 decode on the GPU, against the
// diffusers references of tools/fixtures/make_wan_vae_extra.py and vgen's own CPU runs.
// Skipped where no CUDA device is found.
//
// float32 (TF32 off) is held to the CPU's float32 bound against diffusers; bf16 to "no further
// from diffusers' float32 output than vgen's CPU bf16 run", with 50% slack for the other
// summation orders (cuDNN vs im2col + BLAS).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "models/wan/autoencoder_kl_wan.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

double rel(const Tensor& got, const Tensor& want) { return rel_l2(got.to(Device::cpu()).to(DType::F32), want); }

// run(vae, input) on the GPU in float32 and bf16 and on the CPU in bf16, each against `want`.
void expect_gpu_matches(const std::string& tag, const std::string& dir, const Tensor& input, const Tensor& want,
                        const std::function<Tensor(const AutoencoderKLWan&, const Tensor&)>& run) {
  auto on = [&](Device device, DType dtype) {
    const auto vae = AutoencoderKLWan::from_pretrained(dir, dtype, device);
    const Tensor out = run(*vae, input.to(device));
    EXPECT_EQ(out.dtype(), dtype) << tag;
    return rel(out, want);
  };
  const double f32 = on(kGpu, DType::F32);
  const double gpu_bf16 = on(kGpu, DType::BF16), cpu_bf16 = on(Device::cpu(), DType::BF16);
  std::printf("[ %s on cuda ] rel L2 vs diffusers float32: f32 %.3g; bf16 %.3g (cpu bf16 %.3g)\n", tag.c_str(), f32,
              gpu_bf16, cpu_bf16);
  EXPECT_LT(f32, 1e-5) << tag;
  EXPECT_LT(gpu_bf16, 1.5 * cpu_bf16 + 1e-3) << tag;
}

}  // namespace

TEST(WanVaeGpu, EncodeMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  // float32 convolutions in true FP32 (the default allows TF32, as PyTorch does).
  const vgen::testing::ScopedContext exact(kGpu, vgen::testing::with_tf32(false));
  const WeightStore ref = reference("wan_vae_tiny/ref.safetensors");
  for (const auto& [name, dir] : {std::pair{"wan21", "wan_vae_tiny/wan21"}, std::pair{"wan22", "wan_vae_tiny/wan22"},
                                  std::pair{"wan21_t2v_tiny", "wan21_t2v_tiny/vae"}}) {
    for (const std::string c : {"f1", "f9", "b2f5"}) {
      const std::string key = std::string(name) + "." + c;
      if (!ref.contains(key + ".video")) continue;
      expect_gpu_matches(key + " encode", fixture(dir), ref.get(key + ".video"), ref.get(key + ".latent"),
                         [](const AutoencoderKLWan& vae, const Tensor& video) { return vae.encode(video); });
    }
  }
}

TEST(WanVaeGpu, Wan22DecodeMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const vgen::testing::ScopedContext exact(kGpu, vgen::testing::with_tf32(false));
  const WeightStore ref = reference("wan_vae_tiny/ref.safetensors");
  for (const std::string c : {"t1", "t3"}) {
    expect_gpu_matches("wan22." + c + " decode", fixture("wan_vae_tiny/wan22"), ref.get("wan22." + c + ".z"),
                       ref.get("wan22." + c + ".sample"),
                       [](const AutoencoderKLWan& vae, const Tensor& z) { return vae.decode(z); });
  }
}
