// LoRA adapters fused on the GPU (the merge runs there in float32, then the weight is converted
// to the compute dtype) against diffusers' load_lora_weights + fuse_lora (tests/fixtures/lora_ref):
// float32 with TF32 off to the CPU test's bound, for every key format and one adapter per
// Wan2.2 expert; and bf16 no further from diffusers' float32 forward than the CPU's bf16 load.
#include <gtest/gtest.h>

#include "io/json.h"
#include "models/wan/transformer_wan.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using namespace vgen::testing;

namespace {

std::vector<nn::LoraAdapterSpec> adapters_of(const Json& list) {
  std::vector<nn::LoraAdapterSpec> out;
  for (const Json& a : list) out.push_back({fixture("lora_ref/" + a[0].get<std::string>()), a[1].get<double>()});
  return out;
}

double rel(const Tensor& a, const Tensor& b) { return rel_l2(a.to(Device::cpu()).to(DType::F32), b); }

}  // namespace

TEST(WanLoraGpu, FusedOnTheGpuMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  ScopedContext gpu(kGpu, with_tf32(false));
  const Json cases = read_json_file(fixture("lora_ref/cases.json"))["cases"];
  const WeightStore refs = reference("lora_ref/references.safetensors");
  for (const char* name : {"t2v_wan", "t2v_musubi", "t2v_peft", "t2v_two", "i2v_wan", "wan22"}) {
    const Json c = cases[name];
    const std::string checkpoint = c["checkpoint"].get<std::string>();
    const WeightStore in = reference(checkpoint + "_ref/transformer.safetensors");
    const bool i2v = checkpoint == "wan21_i2v_tiny";
    const Tensor text = i2v ? refs.get("i2v_encoder_hidden_states") : in.get("encoder_hidden_states");
    const Tensor image = i2v ? in.get("encoder_hidden_states_image").to(kGpu) : Tensor();
    std::vector<std::pair<std::string, Json>> experts = {{"transformer", c["lora"]}};
    if (c.contains("lora_2")) experts.emplace_back("transformer_2", c["lora_2"]);
    for (const auto& [component, lora] : experts) {
      const std::string key = std::string(name) + (component == "transformer" ? ":sample" : ":sample_2");
      SCOPED_TRACE(key);
      const std::string dir = fixture(checkpoint + "/" + component);
      const auto f32 = WanTransformer3DModel::from_pretrained(dir, DType::F32, kGpu, false, adapters_of(lora));
      const Tensor x = in.get("hidden_states").to(kGpu), t = in.get("timestep").to(kGpu), ctx = text.to(kGpu);
      const double err = rel(f32->forward(x, t, ctx, image), refs.get(key));
      EXPECT_LT(err, 1e-5);
      const auto bf16 = WanTransformer3DModel::from_pretrained(dir, DType::BF16, kGpu, false, adapters_of(lora));
      const double gpu_bf16 = rel(bf16->forward(x.to(DType::BF16), t, ctx.to(DType::BF16),
                                                image.defined() ? image.to(DType::BF16) : image),
                                  refs.get(key));
      double cpu_bf16 = 0.0;
      {
        ScopedContext cpu(Device::cpu(), ExecutionSettings::from_environment());
        const auto m = WanTransformer3DModel::from_pretrained(dir, DType::BF16, Device::cpu(), false, adapters_of(lora));
        const Tensor xi = in.get("hidden_states").to(DType::BF16), ci = text.to(DType::BF16);
        const Tensor ii = i2v ? in.get("encoder_hidden_states_image").to(DType::BF16) : Tensor();
        cpu_bf16 = rel(m->forward(xi, in.get("timestep"), ci, ii), refs.get(key));
      }
      std::printf("[ %s ] forward rel L2 vs diffusers float32: cuda f32 %.3g, cuda bf16 %.3g, cpu bf16 %.3g\n",
                  key.c_str(), err, gpu_bf16, cpu_bf16);
      EXPECT_LT(gpu_bf16, 1.5 * cpu_bf16 + 1e-3);
    }
  }
}
