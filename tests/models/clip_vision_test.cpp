// CLIPVisionModel and CLIPImageProcessor against transformers 5.23 on the fixtures of
// tools/fixtures/make_image_extra.py (tests/fixtures/image_ref).
//
// Tolerances: the model in CPU float32 vs torch CPU float32 differs in summation order (BLAS
// GEMMs, float32 statistics) and in quick_gelu's form (silu(1.702x) / 1.702): far below the
// 1e-5 relative L2 every component is held to. The image processor is exact: the same
// uint8 pixels (Pillow's resampling) and the same float32 arithmetic.
#include "models/clip/clip_vision_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/json.h"
#include "models/clip/clip_image_processor.h"
#include "support/errors.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
namespace fs = std::filesystem;

namespace {

constexpr double kTolerance = 1e-5;
const char* const kVariants[] = {"gelu", "quick_gelu"};

std::string model_dir(const std::string& variant) {
  return vgen::testing::fixture("image_ref/clip_vision_tiny_" + variant);
}

// A copy of a fixture folder with its JSON file `file` changed by `edit`.
template <typename Edit>
fs::path edited_copy(const std::string& from, const std::string& tag, const std::string& file, Edit edit) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("clip_" + tag);
  fs::remove_all(dir);
  fs::copy(vgen::testing::fixture(from), dir);
  Json j = read_json_file((dir / file).string());
  edit(j);
  std::ofstream((dir / file).string()) << j.dump(2);
  return dir;
}

}  // namespace

// hidden_states[-2] of transformers' CLIPVisionModel: gelu (4 layers, 4 heads, patch 8) and
// quick_gelu (3 layers, 2 heads, patch 6, eps 1e-6), batch 2.
TEST(CLIPVisionModel, PenultimateHiddenStatesMatchTransformers) {
  const WeightStore ref = vgen::testing::reference("image_ref/clip_vision.safetensors");
  for (const std::string variant : kVariants) {
    const auto model = CLIPVisionModel::from_pretrained(model_dir(variant));
    const Tensor expected = ref.get(variant + ".hidden_states_-2");
    const Tensor out = model->penultimate_hidden_states(ref.get(variant + ".pixel_values"));
    ASSERT_EQ(out.shape(), expected.shape()) << variant;
    const double err = vgen::testing::rel_l2(out, expected);
    std::printf("[ CLIPVisionModel %s ] hidden_states[-2] rel L2 %.3g\n", variant.c_str(), err);
    EXPECT_LT(err, kTolerance) << variant;
  }
}

// bf16 weights and activations (torch_dtype=torch.bfloat16 in transformers). Rounding points
// differ (vgen's CPU ops round once per op, quick_gelu takes three), so the bound is
// bf16-sized: within 2e-2 of torch's bf16 run, and no further from the float32 reference than
// 1.5x torch's own bf16 error.
TEST(CLIPVisionModel, Bf16CloseToTransformersBf16) {
  const WeightStore ref = vgen::testing::reference("image_ref/clip_vision.safetensors");
  for (const std::string variant : kVariants) {
    const auto model = CLIPVisionModel::from_pretrained(model_dir(variant), DType::BF16);
    const Tensor out = model->penultimate_hidden_states(ref.get(variant + ".pixel_values"));
    EXPECT_EQ(out.dtype(), DType::BF16);
    const Tensor f32 = ref.get(variant + ".hidden_states_-2"), torch_bf16 = ref.get(variant + ".hidden_states_-2_bf16");
    const double vs_torch = vgen::testing::rel_l2(out.to(DType::F32), torch_bf16);
    const double ours = vgen::testing::rel_l2(out.to(DType::F32), f32), theirs = vgen::testing::rel_l2(torch_bf16, f32);
    std::printf("[ CLIPVisionModel %s bf16 ] rel L2 vs torch bf16 %.3g; vs float32: vgen %.3g, torch %.3g\n",
                variant.c_str(), vs_torch, ours, theirs);
    EXPECT_LT(vs_torch, 2e-2) << variant;
    EXPECT_LT(ours, 1.5 * theirs) << variant;
  }
}

// The Wan repos' checkpoints name the modules under "vision_model." (transformers 4), older ones
// with a position_ids buffer too: the same model loads from those names.
TEST(CLIPVisionModel, LoadsVisionModelPrefixedCheckpoints) {
  const fs::path dir = fs::path(::testing::TempDir()) / "clip_prefixed";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(model_dir("gelu") + "/config.json", dir / "config.json");
  const WeightStore store = WeightStore::open_files({model_dir("gelu") + "/model.safetensors"});
  std::map<std::string, Tensor> renamed;
  for (const std::string& name : store.names()) renamed["vision_model." + name] = store.get(name);
  // transformers before 4.31 also saved the position_ids buffer.
  std::vector<int64_t> ids(17);
  for (int64_t i = 0; i < 17; ++i) ids[i] = i;
  renamed["vision_model.embeddings.position_ids"] = Tensor::from_vector_i64(ids, {1, 17});
  save_safetensors((dir / "model.safetensors").string(), renamed);
  const auto model = CLIPVisionModel::from_pretrained(dir.string());
  const WeightStore ref = vgen::testing::reference("image_ref/clip_vision.safetensors");
  const Tensor out = model->penultimate_hidden_states(ref.get("gelu.pixel_values"));
  EXPECT_LT(vgen::testing::rel_l2(out, ref.get("gelu.hidden_states_-2")), kTolerance);
}

TEST(CLIPVisionModel, ErrorsNameTheFieldOrTensorAtFault) {
  using vgen::testing::expect_error;
  const fs::path act =
      edited_copy("image_ref/clip_vision_tiny_gelu", "act", "config.json", [](Json& j) { j["hidden_act"] = "relu6"; });
  expect_error([&] { CLIPVisionModel::from_pretrained(act.string()); }, "field 'hidden_act' is \"relu6\"");
  const fs::path layers = edited_copy("image_ref/clip_vision_tiny_gelu", "layers", "config.json",
                                      [](Json& j) { j["num_hidden_layers"] = 5; });
  expect_error([&] { CLIPVisionModel::from_pretrained(layers.string()); },
               "missing tensor 'encoder.layers.4.layer_norm1.weight' (num_hidden_layers is 5");
  const fs::path fewer = edited_copy("image_ref/clip_vision_tiny_gelu", "fewer", "config.json",
                                     [](Json& j) { j["num_hidden_layers"] = 3; });
  expect_error([&] { CLIPVisionModel::from_pretrained(fewer.string()); }, "'encoder.layers.3.");
  const fs::path wide =
      edited_copy("image_ref/clip_vision_tiny_gelu", "wide", "config.json", [](Json& j) { j["hidden_size"] = 48; });
  expect_error([&] { CLIPVisionModel::from_pretrained(wide.string()); }, "embeddings.class_embedding");
  const fs::path type =
      edited_copy("image_ref/clip_vision_tiny_gelu", "type", "config.json", [](Json& j) { j["model_type"] = "clip"; });
  expect_error([&] { CLIPVisionModel::from_pretrained(type.string()); }, "field 'model_type' is \"clip\"");
  const auto model = CLIPVisionModel::from_pretrained(model_dir("gelu"));
  expect_error([&] { model->penultimate_hidden_states(Tensor::zeros({1, 3, 24, 24})); }, "must be [batch, 3, 32, 32]");
}

// The GPU in float32 against the CPU, and bf16 close to float32 (skipped without a GPU).
TEST(CLIPVisionModel, GpuMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const WeightStore ref = vgen::testing::reference("image_ref/clip_vision.safetensors");
  for (const std::string variant : kVariants) {
    const Tensor pixels = ref.get(variant + ".pixel_values");
    const Tensor cpu = CLIPVisionModel::from_pretrained(model_dir(variant))->penultimate_hidden_states(pixels);
    vgen::testing::ScopedContext gpu(vgen::testing::kGpu, vgen::testing::with_tf32(false));
    const auto model = CLIPVisionModel::from_pretrained(model_dir(variant), DType::F32, vgen::testing::kGpu);
    const Tensor out = model->penultimate_hidden_states(pixels).to(Device::cpu());
    const double err = vgen::testing::rel_l2(out, cpu);
    const auto bf16 = CLIPVisionModel::from_pretrained(model_dir(variant), DType::BF16, vgen::testing::kGpu);
    const Tensor out_bf16 = bf16->penultimate_hidden_states(pixels).to(Device::cpu()).to(DType::F32);
    const double err_bf16 = vgen::testing::rel_l2(out_bf16, ref.get(variant + ".hidden_states_-2"));
    std::printf("[ CLIPVisionModel %s GPU ] float32 vs CPU rel L2 %.3g; bf16 vs float32 reference %.3g\n",
                variant.c_str(), err, err_bf16);
    EXPECT_LT(err, kTolerance) << variant;
    EXPECT_LT(err_bf16, 2e-2) << variant;
  }
}

// shortest_edge 32 / crop 32 (float outputs of CLIPImageProcessorPil, compared exactly):
// a landscape image (23 -> 32 high, 51 wide) and a portrait one.
TEST(CLIPImageProcessor, TinyConfigMatchesTransformersExactly) {
  const WeightStore ref = vgen::testing::reference("image_ref/clip_processor.safetensors");
  const CLIPImageProcessor processor =
      CLIPImageProcessor::from_pretrained(vgen::testing::fixture("image_ref/clip_processor_tiny"));
  for (const char* source : {"a", "b"}) {
    const Tensor expected = ref.get(fmt::format("tiny.{}", source));
    const Tensor out = processor.preprocess(ref.get(fmt::format("source_{}", source)));
    ASSERT_EQ(out.shape(), expected.shape()) << source;
    EXPECT_EQ(vgen::testing::max_abs_diff(out, expected), 0.0) << source;
  }
}

// The Wan2.1 I2V config (224, bicubic, OpenAI mean/std). The fixture keeps PIL's uint8 crop
// (the script checked that transformers' float output is exactly rescale + normalize of it);
// the output here must be that, to the bit.
TEST(CLIPImageProcessor, WanConfigMatchesTransformersExactly) {
  const WeightStore ref = vgen::testing::reference("image_ref/clip_processor.safetensors");
  const CLIPImageProcessor processor =
      CLIPImageProcessor::from_pretrained(vgen::testing::fixture("image_ref/clip_processor_wan"));
  const CLIPImageProcessorConfig& c = processor.config();
  EXPECT_EQ(c.shortest_edge, 224);
  EXPECT_EQ(c.crop_height, 224);
  EXPECT_EQ(c.resample, media::Resampling::Bicubic);
  const Tensor out = processor.preprocess(ref.get("source_b"));
  ASSERT_EQ(out.shape(), (Shape{1, 3, 224, 224}));
  const Tensor crop = ref.get("wan.b.uint8");
  const float* values = out.data<float>();
  int64_t mismatches = 0;
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < 224 * 224; ++i) {
      const float rescaled =
          static_cast<float>(static_cast<double>(crop.data<uint8_t>()[i * 3 + ch]) * c.rescale_factor);
      const float expected = (rescaled - static_cast<float>(c.image_mean[ch])) / static_cast<float>(c.image_std[ch]);
      mismatches += values[ch * 224 * 224 + i] != expected;
    }
  EXPECT_EQ(mismatches, 0);
}

// A crop larger than the resized image is zero-padded as transformers' center_crop does.
TEST(CLIPImageProcessor, CropLargerThanImageIsZeroPadded) {
  CLIPImageProcessorConfig config;
  config.do_resize = false;
  config.crop_height = 5;
  config.crop_width = 4;
  config.do_normalize = false;
  const Tensor image = Tensor::full({2, 3, 3}, 255.0f, DType::U8);
  const Tensor out = CLIPImageProcessor(config).preprocess(image);
  ASSERT_EQ(out.shape(), (Shape{1, 3, 5, 4}));
  // numpy: top_pad = ceil(3 / 2) = 2 rows above, left_pad = ceil(1 / 2) = 1 column left.
  const std::vector<float> v = out.select(1, 0).to_vector();
  const std::vector<float> expected{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0};
  EXPECT_EQ(v, expected);
}

TEST(CLIPImageProcessor, ConfigIsReadStrictly) {
  using vgen::testing::expect_error;
  const std::string tiny = "image_ref/clip_processor_tiny";
  const auto load = [](const fs::path& dir) { CLIPImageProcessor::from_pretrained(dir.string()); };
  expect_error(
      [&] { load(edited_copy(tiny, "unknown", "preprocessor_config.json", [](Json& j) { j["do_pad"] = true; })); },
      "do_pad");
  expect_error(
      [&] { load(edited_copy(tiny, "nearest", "preprocessor_config.json", [](Json& j) { j["resample"] = 6; })); },
      "field 'resample': resample 6 is not a PIL filter");
  expect_error(
      [&] {
        load(edited_copy(tiny, "mean", "preprocessor_config.json", [](Json& j) { j["image_mean"] = {0.5, 0.5}; }));
      },
      "field 'image_mean' must have 3 values");
  expect_error(
      [&] {
        load(edited_copy(tiny, "type", "preprocessor_config.json",
                         [](Json& j) { j["image_processor_type"] = "SiglipImageProcessor"; }));
      },
      "field 'image_processor_type' is \"SiglipImageProcessor\"");
  expect_error(
      [&] {
        load(edited_copy(tiny, "size", "preprocessor_config.json", [](Json& j) {
          j["size"] = {{"shortest_edge", 32}, {"longest_edge", 64}};
        }));
      },
      "longest_edge");
  expect_error(
      [&] { load(edited_copy(tiny, "flag", "preprocessor_config.json", [](Json& j) { j["do_resize"] = "yes"; })); },
      "do_resize");
  // Old-style integer size and crop_size are what get_size_dict makes of them.
  const fs::path old = edited_copy(tiny, "old", "preprocessor_config.json", [](Json& j) {
    j["size"] = 32;
    j["crop_size"] = 32;
  });
  const WeightStore ref = vgen::testing::reference("image_ref/clip_processor.safetensors");
  const Tensor out = CLIPImageProcessor::from_pretrained(old.string()).preprocess(ref.get("source_a"));
  EXPECT_EQ(vgen::testing::max_abs_diff(out, ref.get("tiny.a")), 0.0);
}
