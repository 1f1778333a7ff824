// Image-to-video and Wan2.2 against diffusers' own runs on the tiny fixtures written by
// tools/fixtures/make_wan_i2v_fixtures.py: Wan2.1 I2V (CLIP), FLF2V (first and last frame),
// Wan2.2 two experts (text- and image-to-video) and TI2V-5B (expand_timesteps, with and
// without an image). Each piece of the pipeline (the transformers, the image condition, CLIP's
// tokens) and each run end to end (initial latents given, denoised latents and frames out).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/json.h"
#include "media/frames.h"
#include "media/image.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#include "pipelines/wan/pipeline_wan.h"
#include "support/parity.h"
#include "support/wan_fixture_runs.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;
using vgen::testing::run_prefix;
using vgen::testing::wan_fixture_spec;
using vgen::testing::wan_run_params;

namespace fs = std::filesystem;

namespace {

WanPipeline& wan(DiffusionPipeline& p) { return dynamic_cast<WanPipeline&>(p); }

// Fraction of uint8 values that differ by more than `levels`.
double fraction_off(const Tensor& a, const Tensor& b, int levels) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  size_t off = 0;
  for (size_t i = 0; i < x.size(); ++i) off += std::fabs(x[i] - y[i]) > levels;
  return static_cast<double>(off) / static_cast<double>(x.size());
}

class WanI2VParity : public ::testing::TestWithParam<std::string> {};

}  // namespace

// One forward of each transformer (each expert) against diffusers', with CLIP image tokens
// (I2V, FLF2V's pairs with the position embedding) and per-token timesteps (TI2V).
TEST_P(WanI2VParity, TransformerForward) {
  const std::string name = GetParam();
  const WeightStore ref = reference(name + "_ref/transformer.safetensors");
  const Tensor image = ref.contains("encoder_hidden_states_image") ? ref.get("encoder_hidden_states_image") : Tensor();
  // With 512-token contexts the fixture stores none: it is [prompt, negative prompt] of text.safetensors.
  Tensor context;
  if (ref.contains("encoder_hidden_states")) {
    context = ref.get("encoder_hidden_states");
  } else {
    const WeightStore text = reference(name + "_ref/text.safetensors");
    context = ops::cat({text.get("prompt_embeds_0"), text.get("negative_prompt_embeds")}, 0);
  }
  for (const auto& [folder, suffix] : {std::pair{"transformer", ""}, std::pair{"transformer_2", "_2"}}) {
    if (!ref.contains(std::string("sample") + suffix)) continue;
    SCOPED_TRACE(folder);
    auto model = WanTransformer3DModel::from_pretrained(fixture(name + "/" + folder), DType::F32, Device::cpu());
    const Tensor out = model->forward(ref.get("hidden_states"), ref.get("timestep"), context, image);
    const double err = rel_l2(out, ref.get(std::string("sample") + suffix));
    EXPECT_LT(err, 1e-5) << name << " " << folder;
    std::printf("[%s %s] forward rel L2 %.2e\n", name.c_str(), folder, err);
  }
}

// The pieces prepare_latents and encode_image build: the preprocessed image, the VAE-encoded
// condition with its mask (or TI2V's first-frame latent), CLIP's penultimate hidden states.
TEST_P(WanI2VParity, ImageCondition) {
  const std::string name = GetParam();
  if (!fs::exists(fixture(name + "_ref/condition.safetensors"))) GTEST_SKIP() << "text-to-video only";
  const Json spec = wan_fixture_spec(name);
  const WeightStore ref = reference(name + "_ref/condition.safetensors");
  const WeightStore latents = reference(name + "_ref/pipeline.safetensors");
  auto pipe = load_pipeline(fixture(name), PipelineOptions{});
  // The run with an image (TI2V's is "i2v_").
  for (const auto& [key, run] : spec["runs"].items()) {
    if (!run.contains("image")) continue;
    const ResolvedParams r = pipe->resolve(wan_run_params(name, run, spec, latents));
    const Tensor pre = wan(*pipe).preprocess_image(r.image, r.height, r.width);
    EXPECT_EQ(max_abs_diff(pre, ref.get("image_preprocessed")), 0.0) << "video_processor.preprocess";
    const Tensor condition = wan(*pipe).prepare_condition(r);
    const Tensor want = ref.contains("condition") ? ref.get("condition") : ref.get("latent_condition");
    const double err = rel_l2(condition, want);
    EXPECT_LT(err, 1e-5) << name;
    std::printf("[%s] condition rel L2 %.2e\n", name.c_str(), err);
    break;
  }
  if (fs::exists(fixture(name + "_ref/image_encoder.safetensors"))) {
    const WeightStore clip = reference(name + "_ref/image_encoder.safetensors");
    for (const std::string& key : clip.names()) {
      if (!key.starts_with("image_embeds:")) continue;
      const std::string image = key.substr(std::string("image_embeds:").size());
      const std::string png = fixture(name + "_ref/" + image + ".png");
      const std::string file = fs::exists(png) ? png : fixture(name + "_ref/" + image + ".jpg");
      const Tensor embeds = wan(*pipe).encode_image({media::read_image(file)});
      const double err = rel_l2(embeds, clip.get(key));
      EXPECT_LT(err, 1e-5) << image;
    }
  }
}

// Every run of pipeline.json end to end: the experts used per step, the denoised latents, the frames.
TEST_P(WanI2VParity, MatchesDiffusersEndToEnd) {
  const std::string name = GetParam();
  const Json spec = wan_fixture_spec(name);
  const WeightStore ref = reference(name + "_ref/pipeline.safetensors");
  auto pipe = load_pipeline(fixture(name), PipelineOptions{});
  for (const auto& [key, run] : spec["runs"].items()) {
    const std::string prefix = run_prefix(key);
    SCOPED_TRACE(name + " run '" + prefix + "'");
    std::vector<int> experts;
    const GenerationOutput out =
        pipe->generate(pipe->resolve(wan_run_params(name, run, spec, ref)), [&](const StepProgress& p) {
          experts.push_back(p.expert);
          return true;
        });
    const std::vector<float> want_experts = ref.get(prefix + "step_expert").to_vector();
    ASSERT_EQ(experts.size(), want_experts.size());
    // The fixture numbers the experts 1 (transformer) and 2 (transformer_2).
    for (size_t i = 0; i < experts.size(); ++i)
      EXPECT_EQ(experts[i] + 1, static_cast<int>(want_experts[i])) << "step " << i;
    // float32 on both sides: errors stay near 1e-5 relative through the steps and the VAE.
    const double latent_err = rel_l2(out.denoised_latents, ref.get(prefix + "denoised_latents"));
    EXPECT_LT(latent_err, 1e-4);
    if (ref.contains(prefix + "frames_float")) {
      EXPECT_LT(max_abs_diff(media::video_to_float_frames(out.video), ref.get(prefix + "frames_float")), 1e-4);
    }
    // uint8 frames: rounding can flip a value sitting on a .5 boundary, so allow one level.
    const Tensor want = ref.get(prefix + "frames_uint8");
    EXPECT_EQ(fraction_off(out.frames, want, 1), 0.0);
    EXPECT_LT(fraction_off(out.frames, want, 0), 1e-3);
    std::printf("[%s %s] denoised latents rel L2 %.2e, uint8 values off by one %.4f%%\n", name.c_str(), prefix.c_str(),
                latent_err, 100.0 * fraction_off(out.frames, want, 0));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, WanI2VParity, ::testing::ValuesIn(vgen::testing::kWanI2VFixtures));

TEST(WanI2V, CapabilitiesSayWhatEachCheckpointTakes) {
  struct Want {
    const char* name;
    const char* tasks;
    bool image, image_required, last_image, two_experts;
    double fps;
  };
  for (const Want& w : {Want{"wan21_t2v_tiny", "text-to-video", false, false, false, false, 16},
                        Want{"wan21_i2v_tiny", "image-to-video", true, true, false, false, 16},
                        Want{"wan21_flf2v_tiny", "image-to-video, first-last-frame-to-video", true, true, true, false, 16},
                        Want{"wan22_t2v_tiny", "text-to-video", false, false, false, true, 16},
                        Want{"wan22_i2v_tiny", "image-to-video, first-last-frame-to-video", true, true, true, true, 16},
                        Want{"wan22_ti2v_tiny", "text-to-video, image-to-video", true, false, false, false, 24}}) {
    SCOPED_TRACE(w.name);
    auto pipe = load_pipeline(fixture(w.name), PipelineOptions{});
    const PipelineCapabilities& c = pipe->capabilities();
    EXPECT_EQ(c.task_list(), w.tasks);
    EXPECT_EQ(c.image_input, w.image);
    EXPECT_EQ(c.image_required, w.image_required);
    EXPECT_EQ(c.last_image_input, w.last_image);
    EXPECT_EQ(c.two_experts, w.two_experts);
    EXPECT_EQ(c.default_fps, w.fps);
  }
}

namespace {

// The error of resolve(p) on checkpoint `name`; "" when it succeeds.
std::string resolve_error(DiffusionPipeline& pipe, const GenerationParams& p) {
  try {
    pipe.resolve(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Tensor solid_image(int64_t h, int64_t w) { return Tensor::full({h, w, 3}, 128.0f, DType::U8); }

}  // namespace

TEST(WanI2V, RefusesBadImageRequestsNamingTheField) {
  auto t2v = load_pipeline(fixture("wan21_t2v_tiny"), PipelineOptions{});
  GenerationParams p;
  p.prompt = "a cat";
  p.image = solid_image(32, 48);
  EXPECT_NE(resolve_error(*t2v, p).find("image: this model"), std::string::npos) << resolve_error(*t2v, p);

  auto i2v = load_pipeline(fixture("wan21_i2v_tiny"), PipelineOptions{});
  GenerationParams q;
  q.prompt = "a cat";
  q.height = 32;
  q.width = 48;
  q.num_frames = 5;
  EXPECT_NE(resolve_error(*i2v, q).find("image: this model"), std::string::npos) << "an I2V model needs an image";
  q.image = solid_image(29, 37);
  EXPECT_EQ(resolve_error(*i2v, q), "");
  // diffusers' Wan2.1 I2V cannot take a last frame (the FLF2V checkpoints can).
  q.last_image = solid_image(29, 37);
  EXPECT_NE(resolve_error(*i2v, q).find("last_image: this model"), std::string::npos) << resolve_error(*i2v, q);
  q.last_image = Tensor();
  q.guidance_scale_2 = 3.0;
  EXPECT_NE(resolve_error(*i2v, q).find("guidance_scale_2 applies to two-expert models"), std::string::npos);

  auto flf2v = load_pipeline(fixture("wan21_flf2v_tiny"), PipelineOptions{});
  q.guidance_scale_2.reset();
  EXPECT_NE(resolve_error(*flf2v, q).find("needs the last frame too"), std::string::npos);
  // As in diffusers, a last frame of another size is resized to height x width like the first.
  q.last_image = solid_image(30, 52);
  EXPECT_EQ(resolve_error(*flf2v, q), "");
  q.last_image = Tensor::full({29, 37, 4}, 1.0f, DType::U8);
  EXPECT_NE(resolve_error(*flf2v, q).find("last_image must be a decoded RGB image"), std::string::npos);

  auto ti2v = load_pipeline(fixture("wan22_ti2v_tiny"), PipelineOptions{});
  GenerationParams r;
  r.prompt = "a cat";
  r.image = solid_image(64, 32);
  r.last_image = solid_image(64, 32);
  EXPECT_NE(resolve_error(*ti2v, r).find("last_image: this model"), std::string::npos);
}

TEST(WanI2V, WithoutASizeTheImageAspectRatioSetsIt) {
  auto i2v = load_pipeline(fixture("wan21_i2v_tiny"), PipelineOptions{});
  GenerationParams p;
  p.prompt = "a cat";
  // 16:9 at the default 480x832 area: round(sqrt(399360 * 9/16)) = 474 -> 464 and
  // round(sqrt(399360 * 16/9)) = 843 -> 832, multiples of 16 (diffusers' I2V example).
  p.image = solid_image(720, 1280);
  const ResolvedParams r = i2v->resolve(p);
  EXPECT_EQ(r.height, 464);
  EXPECT_EQ(r.width, 832);
}

namespace {

// A copy of fixture `name` in a temporary folder whose model_index.json `edit` changes.
std::string edited_copy(const std::string& name, const std::function<void(Json&)>& edit) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("vgen_{}_{}", name, ::testing::UnitTest::GetInstance()->random_seed());
  fs::remove_all(dir);
  fs::copy(fixture(name), dir, fs::copy_options::recursive);
  Json index = read_json_file((dir / "model_index.json").string());
  edit(index);
  std::ofstream((dir / "model_index.json").string()) << index.dump(2);
  return dir.string();
}

std::string load_error(const std::string& dir) {
  try {
    load_pipeline(dir, PipelineOptions{});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(WanI2V, RefusesInconsistentTwoExpertCheckpoints) {
  const std::string no_second = edited_copy("wan22_t2v_tiny", [](Json& j) { j["transformer_2"] = {nullptr, nullptr}; });
  EXPECT_NE(load_error(no_second).find("no 'transformer_2' component"), std::string::npos) << load_error(no_second);
  const std::string out_of_range = edited_copy("wan22_t2v_tiny", [](Json& j) { j["boundary_ratio"] = 1.5; });
  EXPECT_NE(load_error(out_of_range).find("boundary_ratio 1.5 is out of range"), std::string::npos)
      << load_error(out_of_range);
  const std::string no_boundary = edited_copy("wan22_t2v_tiny", [](Json& j) { j["boundary_ratio"] = nullptr; });
  EXPECT_NE(load_error(no_boundary).find("boundary_ratio is not set"), std::string::npos) << load_error(no_boundary);
  for (const std::string& d : {no_second, out_of_range, no_boundary}) fs::remove_all(d);
}
