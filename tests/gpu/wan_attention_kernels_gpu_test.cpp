// WanTransformer3DModel in bf16 on the GPU with each attention kernel, on the head-dim-128
// fixture (tools/fixtures/make_wan_hd128_fixture.py: 2 heads x 128, one layer, 4 x 32 x 32 =
// 4096 video tokens, 32 text tokens), against diffusers' float32 forward of the same weights.
// The exact kernels are held to diffusers' own bf16 error (25% slack, as the other bf16 model
// tests); the quantized one (sage) to 2.5x it, the bound its issue sets for a forward. Each case
// first checks which kernel the self-attention's shape takes under that setting, so that a
// fallback does not pass for the kernel. Skipped without a GPU; a kernel that does not run on
// this GPU or build (flash and sage need sm_90a code) skips its case, saying why.
#include <gtest/gtest.h>

#include <string>

#include "models/wan/transformer_wan.h"
#include "ops/ops.h"
#include "support/gpu.h"
#include "support/parity.h"
#ifdef VGEN_WITH_CUDA
#include "backends/cuda/attention.h"
#endif

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::reference;
using vgen::testing::expect_as_close_as_diffusers_bf16;
using vgen::testing::ScopedContext;
using vgen::testing::with_attention;

namespace {

struct KernelCase {
  const char* setting;  // ExecutionSettings::attention_backend
  const char* path;     // what cuda::attention_path must say for the self-attention's shape
  double slack;         // allowed error, in units of diffusers' bf16 error
};

class WanAttentionKernel : public ::testing::TestWithParam<KernelCase> {};

TEST_P(WanAttentionKernel, Bf16ForwardAsCloseAsDiffusersBf16) {
  SKIP_WITHOUT_GPU();
#ifdef VGEN_WITH_CUDA
  const KernelCase c = GetParam();
  const WeightStore ref = reference("wan21_hd128_tiny_ref/transformer.safetensors");
  const ScopedContext context(kGpu, with_attention(c.setting));
  {
    // The self-attention's q, k, v: [B, H, S, D] views of [B, S, H, D], 4096 tokens, 2 x 128.
    const Tensor q = Tensor::empty({1, 4096, 2, 128}, DType::BF16, kGpu).permute({0, 2, 1, 3});
    const std::string path = cuda::attention_path(q, q, q, {});
    if (path != c.path) {
      if (std::string(c.path) == "flash" || std::string(c.path) == "sage")
        GTEST_SKIP() << c.setting << " takes the " << path << " path here (no sm_90a kernel on this GPU or build)";
      FAIL() << c.setting << ": the self-attention takes " << path << ", not " << c.path;
    }
  }
  const auto model = WanTransformer3DModel::from_pretrained(fixture("wan21_hd128_tiny/transformer"), DType::BF16, kGpu);
  const Tensor out = model->forward(ref.get("hidden_states").to(kGpu), ref.get("timestep"),
                                    ref.get("encoder_hidden_states").to(DType::BF16).to(kGpu));
  EXPECT_EQ(out.dtype(), DType::BF16);
  expect_as_close_as_diffusers_bf16(std::string(c.setting) + " (" + c.path + ") forward", out, ref.get("sample"),
                                    ref.get("sample_bf16"), c.slack);
#endif
}

INSTANTIATE_TEST_SUITE_P(Kernels, WanAttentionKernel,
                         ::testing::Values(KernelCase{"reference", "reference", 1.25}, KernelCase{"cudnn", "cudnn", 1.25},
                                           KernelCase{"flash", "flash", 1.25}, KernelCase{"auto", "flash", 1.25},
                                           KernelCase{"sage", "sage", 2.5}),
                         [](const ::testing::TestParamInfo<KernelCase>& info) { return std::string(info.param.setting); });

}  // namespace
