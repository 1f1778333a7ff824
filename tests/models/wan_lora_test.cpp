// LoRA adapters fused at load against diffusers' load_lora_weights + fuse_lora(lora_scale)
// (tests/fixtures/lora_ref, tools/fixtures/make_wan_lora_fixtures.py): the transformer forward
// and the whole pipeline for each key format, two adapters at once, one adapter per Wan2.2
// expert; and the errors a bad file gets.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/json.h"
#include "models/wan/transformer_wan.h"
#include "nn/lora.h"
#include "pipelines/registry.h"
#include "support/command.h"
#include "support/errors.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"

using namespace vgen;
using vgen::testing::expect_error;
using vgen::testing::fixture;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

std::vector<nn::LoraAdapterSpec> adapters_of(const Json& list) {
  std::vector<nn::LoraAdapterSpec> out;
  for (const Json& a : list) out.push_back({fixture("lora_ref/" + a[0].get<std::string>()), a[1].get<double>()});
  return out;
}

Json lora_case(const std::string& name) { return read_json_file(fixture("lora_ref/cases.json"))["cases"][name]; }

// Values of two uint8 frame tensors that differ by more than `levels`.
int64_t values_off(const Tensor& a, const Tensor& b, int levels) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  int64_t off = 0;
  for (size_t i = 0; i < x.size(); ++i) off += std::fabs(x[i] - y[i]) > levels;
  return off;
}

class WanLoraForward : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(WanLoraForward, MatchesDiffusersFusedLora) {
  const std::string name = GetParam();
  const Json c = lora_case(name);
  const std::string checkpoint = c["checkpoint"].get<std::string>();
  const WeightStore refs = reference("lora_ref/references.safetensors");
  const WeightStore in = reference(checkpoint + "_ref/transformer.safetensors");
  const bool i2v = checkpoint == "wan21_i2v_tiny";
  const Tensor text = i2v ? refs.get("i2v_encoder_hidden_states") : in.get("encoder_hidden_states");
  const Tensor image = i2v ? in.get("encoder_hidden_states_image") : Tensor();

  std::vector<std::pair<std::string, Json>> experts = {{"transformer", c["lora"]}};
  if (c.contains("lora_2")) experts.emplace_back("transformer_2", c["lora_2"]);
  for (const auto& [component, lora] : experts) {
    auto model = WanTransformer3DModel::from_pretrained(fixture(checkpoint + "/" + component), DType::F32,
                                                        Device::cpu(), false, adapters_of(lora));
    const Tensor out = model->forward(in.get("hidden_states"), in.get("timestep"), text, image);
    const std::string key = name + (component == "transformer" ? ":sample" : ":sample_2");
    const double err = rel_l2(out, refs.get(key));
    EXPECT_LT(err, 1e-5) << key;
    std::printf("[%s] %s forward rel L2 %.2e\n", name.c_str(), component.c_str(), err);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, WanLoraForward,
                         ::testing::Values("t2v_wan", "t2v_musubi", "t2v_peft", "t2v_two", "t2v_peft_metadata", "t2v_wan_head_diff", "i2v_wan", "i2v_musubi",
                                           "wan22"));

TEST(WanLora, PipelineMatchesDiffusersEndToEnd) {
  const WeightStore refs = reference("lora_ref/references.safetensors");
  for (const std::string name : {"t2v_wan", "t2v_musubi", "t2v_peft", "wan22"}) {
    SCOPED_TRACE(name);
    const Json c = lora_case(name);
    const std::string checkpoint = c["checkpoint"].get<std::string>();
    PipelineOptions options;
    options.lora = adapters_of(c["lora"]);
    if (c.contains("lora_2")) options.lora_2 = adapters_of(c["lora_2"]);
    auto pipe = load_pipeline(fixture(checkpoint), options);
    GenerationParams p;
    if (checkpoint == "wan21_t2v_tiny") {
      p = vgen::testing::wan_t2v_call_params(checkpoint);
    } else {
      const Json spec = vgen::testing::wan_fixture_spec(checkpoint);
      p = vgen::testing::wan_run_params(checkpoint, spec["runs"]["(no prefix)"], spec,
                                        reference(checkpoint + "_ref/pipeline.safetensors"));
    }
    const GenerationOutput out = pipe->generate(pipe->resolve(p));
    const Tensor want = refs.get(name + ":frames_uint8");
    // uint8 frames: rounding can flip a value sitting on a .5 boundary, so allow one level.
    EXPECT_EQ(values_off(out.frames, want, 1), 0);
    std::printf("[%s] end to end: %lld of %lld uint8 values off by one\n", name.c_str(),
                static_cast<long long>(values_off(out.frames, want, 0)), static_cast<long long>(want.numel()));
    // describe() lists the adapters (and so does the output metadata).
    bool listed = false;
    for (const auto& [key, value] : pipe->describe())
      listed = listed || (key == "lora" && value.find(options.lora.front().path) != std::string::npos);
    EXPECT_TRUE(listed);
    EXPECT_TRUE(pipe->capabilities().lora);
  }
}

TEST(WanLora, ParsesFileAndScale) {
  EXPECT_EQ(nn::parse_lora_adapter_spec("a.safetensors").path, "a.safetensors");
  EXPECT_EQ(nn::parse_lora_adapter_spec("a.safetensors").scale, 1.0);
  const nn::LoraAdapterSpec s = nn::parse_lora_adapter_spec("/x/a.safetensors:0.75");
  EXPECT_EQ(s.path, "/x/a.safetensors");
  EXPECT_EQ(s.scale, 0.75);
  EXPECT_EQ(nn::parse_lora_adapter_spec("b:-1").scale, -1.0);
  expect_error([] { nn::parse_lora_adapter_spec("a.safetensors:big"); }, "must be a number");
  // strtod reads these; a non-finite or huge scale would fuse NaN / inf into every weight.
  for (const char* bad : {"a.safetensors:nan", "a.safetensors:inf", "a.safetensors:-inf", "a.safetensors:1e400",
                          "a.safetensors:100.5"})
    expect_error([bad] { nn::parse_lora_adapter_spec(bad); }, "must be a number in [-100, 100]");
  EXPECT_EQ(nn::parse_lora_adapter_spec("a.safetensors:-100").scale, -100.0);
  // A file whose name holds ':' is taken whole when what follows is not a number.
  const std::string colon = vgen::testing::test_temp_path("my:lora.safetensors");
  std::FILE* f = std::fopen(colon.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_EQ(nn::parse_lora_adapter_spec(colon).path, colon);
  EXPECT_EQ(nn::parse_lora_adapter_spec(colon + ":0.5").path, colon);
}

TEST(WanLora, DropsWhatDiffusersDrops) {
  // Norm diffs (zeros in the files diffusers has seen) are dropped; the rest is converted.
  const nn::LoraFile f = nn::read_lora_file(fixture("lora_ref/t2v_wan.safetensors"));
  EXPECT_TRUE(f.unmatched.empty());
  EXPECT_TRUE(f.modules.count("blocks.0.attn1.to_q"));
  EXPECT_TRUE(f.modules.count("proj_out"));
  EXPECT_TRUE(f.modules.count("condition_embedder.time_proj"));
  for (const auto& [name, _] : f.modules) EXPECT_EQ(name.find("norm"), std::string::npos) << name;
}

namespace {

const std::string kT2V = "wan21_t2v_tiny/transformer";

std::string write_lora(const std::string& name, const std::map<std::string, Tensor>& tensors) {
  const std::string dir = vgen::testing::fresh_dir("wan_lora_test");
  const std::string path = dir + "/" + name;
  save_safetensors(path, tensors);
  return path;
}

void load_t2v(const std::string& path, bool ignore_unmatched = false) {
  WanTransformer3DModel::from_pretrained(fixture(kT2V), DType::F32, Device::cpu(), false, {{path, 1.0}},
                                         ignore_unmatched);
}

}  // namespace

TEST(WanLora, BadFilesAreOneClearError) {
  const std::string dir = vgen::testing::fresh_dir("wan_lora_bad");
  {  // corrupt header
    const std::string path = dir + "/corrupt.safetensors";
    const std::string bytes("\x10\0\0\0\0\0\0\0{not json at all", 24);  // a 16-byte header that is not JSON
    std::ofstream(path, std::ios::binary) << bytes;
    expect_error([&] { load_t2v(path); }, path);
    expect_error([&] { load_t2v(path); }, "corrupted safetensors header");
  }
  const std::string a = "transformer.blocks.0.attn1.to_q.lora_A.weight", b = "transformer.blocks.0.attn1.to_q.lora_B.weight";
  {  // A does not fit the weight [48, 48]
    const std::string path = write_lora("wide.safetensors", {{a, Tensor::zeros({2, 47})}, {b, Tensor::full({48, 2}, 1.f)}});
    expect_error([&] { load_t2v(path); }, path + ": LoRA tensor '" + a + "'");
    expect_error([&] { load_t2v(path); }, "does not fit 'blocks.0.attn1.to_q.weight'");
  }
  {  // A and B of different ranks
    const std::string path = write_lora("ranks.safetensors", {{a, Tensor::zeros({2, 48})}, {b, Tensor::zeros({48, 3})}});
    expect_error([&] { load_t2v(path); }, "do not form a pair");
    expect_error([&] { load_t2v(path); }, path);
  }
  {  // half of a pair
    const std::string path = write_lora("half.safetensors", {{a, Tensor::zeros({2, 48})}});
    expect_error([&] { load_t2v(path); }, path + ": LoRA tensor '" + a + "' has no matching 'blocks.0.attn1.to_q.lora_B.weight'");
  }
  {  // non-float dtype
    const std::string path =
        write_lora("int.safetensors", {{a, Tensor::from_vector_i64(std::vector<int64_t>(96, 1), {2, 48})},
                                       {b, Tensor::zeros({48, 2})}});
    expect_error([&] { load_t2v(path); }, path + ": LoRA tensor '" + a + "' has non-float dtype");
  }
  {  // a module the model does not have: an error, or skipped with ignore_unmatched
    const std::string path = write_lora(
        "missing.safetensors", {{a, Tensor::zeros({2, 48})},
                                {b, Tensor::zeros({48, 2})},
                                {"transformer.blocks.9.attn1.to_q.lora_A.weight", Tensor::zeros({2, 48})},
                                {"transformer.blocks.9.attn1.to_q.lora_B.weight", Tensor::zeros({48, 2})}});
    expect_error([&] { load_t2v(path); }, path + ": 1 LoRA target(s) match no weight of WanTransformer3DModel: "
                                          "'blocks.9.attn1.to_q.weight'");
    load_t2v(path, true);
  }
  {  // a key no converter maps
    const std::string path = write_lora(
        "unknown.safetensors", {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", Tensor::zeros({2, 48})},
                                {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", Tensor::zeros({48, 2})},
                                {"diffusion_model.blocks.0.modulation.lora_down.weight", Tensor::zeros({2, 48})}});
    expect_error([&] { load_t2v(path); },
                 path + ": 1 LoRA key(s) match no module of a Wan transformer: "
                        "'diffusion_model.blocks.0.modulation.lora_down.weight'");
    load_t2v(path, true);
  }
}

TEST(WanLora, SecondExpertAdaptersNeedTwoExperts) {
  PipelineOptions options;
  options.lora_2 = {{fixture("lora_ref/wan22_low_wan.safetensors"), 1.0}};
  expect_error([&] { load_pipeline(fixture("wan21_t2v_tiny"), options); }, "need a two-expert model");
}
