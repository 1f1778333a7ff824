// FluxTransformer2DModel against diffusers 0.42.1 on the tiny random fixtures written by
// tools/fixtures/make_flux_fixtures.py (flux_dev_tiny: guidance embeddings; flux_schnell_tiny:
// none). Both sides compute in float32: what is left is summation order in GEMMs, attention
// and norms (~1e-7 per op), so every stage must agree to 1e-5 relative L2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/flux/transformer_flux.h"
#include "ops/ops.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace fs = std::filesystem;

namespace {

constexpr double kTolerance = 1e-5;

void expect_close(const std::string& what, const Tensor& got, const Tensor& want, double tol = kTolerance) {
  const double rel = rel_l2(got, want);
  std::cout << "  " << what << ": rel L2 " << rel << ", max |diff| " << max_abs_diff(got, want) << "\n";
  EXPECT_LT(rel, tol) << what;
}

void check_against_reference(const std::string& name, bool guidance) {
  const auto model = FluxTransformer2DModel::from_pretrained(fixture(name + "/transformer"), DType::F32, Device::cpu());
  EXPECT_EQ(model->config().guidance_embeds, guidance);
  const WeightStore ref = reference(name + "_ref/transformer.safetensors");
  FluxTransformerTrace trace;
  const Tensor out = model->forward(ref.get("hidden_states"), ref.get("encoder_hidden_states"),
                                    ref.get("pooled_projections"), ref.get("timestep"), ref.get("img_ids"),
                                    ref.get("txt_ids"), guidance ? ref.get("guidance") : Tensor(), &trace);
  expect_close(name + " x_embedder", trace.x, ref.get("dbg_x"));
  expect_close(name + " context_embedder", trace.context, ref.get("dbg_context"));
  expect_close(name + " time_text_embed", trace.temb, ref.get("dbg_temb"));
  expect_close(name + " rope cos", trace.rope_cos, ref.get("dbg_rope_cos"));
  expect_close(name + " rope sin", trace.rope_sin, ref.get("dbg_rope_sin"));
  expect_close(name + " double blocks (image)", trace.double_out_hidden, ref.get("dbg_double_out_hidden"));
  expect_close(name + " double blocks (text)", trace.double_out_context, ref.get("dbg_double_out_context"));
  expect_close(name + " single blocks", trace.single_out, ref.get("dbg_single_out"));
  expect_close(name + " sample", out, ref.get("sample"));
}

// A copy of the flux_dev_tiny transformer folder with its config edited.
std::string edited_copy(const std::string& tag, const std::function<void(Json&)>& edit) {
  const fs::path src = fixture("flux_dev_tiny/transformer");
  const fs::path dst = fs::temp_directory_path() / ("vgen_flux_cfg_" + tag);
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), dst / e.path().filename());
  Json j = read_json_file((dst / "config.json").string());
  edit(j);
  std::ofstream((dst / "config.json").string()) << j.dump(2);
  return dst.string();
}

std::string load_error(const std::string& dir) {
  try {
    FluxTransformer2DModel::from_pretrained(dir, DType::F32, Device::cpu());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(FluxTransformer, DevMatchesDiffusers) { check_against_reference("flux_dev_tiny", true); }

TEST(FluxTransformer, SchnellMatchesDiffusers) { check_against_reference("flux_schnell_tiny", false); }

TEST(FluxTransformer, PosEmbedOfKnownIds) {
  // One axis of width 4, theta 10000: frequencies 1 and 1/100; id 3 -> angles 3 and 0.03.
  const nn::RotaryTables t = flux_pos_embed(Tensor::from_vector({3.0f}, {1, 1}), {4}, Device::cpu());
  const std::vector<float> c = t.cos.to_vector(), s = t.sin.to_vector();
  ASSERT_EQ(c.size(), 4u);
  EXPECT_FLOAT_EQ(c[0], static_cast<float>(std::cos(3.0)));
  EXPECT_FLOAT_EQ(c[1], c[0]);
  EXPECT_FLOAT_EQ(c[2], static_cast<float>(std::cos(0.03)));
  EXPECT_FLOAT_EQ(s[3], static_cast<float>(std::sin(0.03)));
}

TEST(FluxTransformer, BadConfigAndInputsNameTheCulprit) {
  EXPECT_NE(load_error(edited_copy("axes", [](Json& j) { j["axes_dims_rope"] = {4, 4, 4}; })).find("axes_dims_rope"),
            std::string::npos);
  EXPECT_NE(load_error(edited_copy("patch", [](Json& j) { j["patch_size"] = 2; })).find("patch_size"),
            std::string::npos);
  // A config that says guidance_embeds while the weights have none: the missing tensor is named.
  const std::string no_guidance = edited_copy("guid", [](Json& j) { j["guidance_embeds"] = false; });
  EXPECT_NE(load_error(no_guidance).find("guidance_embedder"), std::string::npos) << load_error(no_guidance);

  const auto model =
      FluxTransformer2DModel::from_pretrained(fixture("flux_dev_tiny/transformer"), DType::F32, Device::cpu());
  const WeightStore ref = reference("flux_dev_tiny_ref/transformer.safetensors");
  try {
    model->forward(ref.get("hidden_states"), ref.get("encoder_hidden_states"), ref.get("pooled_projections"),
                   ref.get("timestep"), ref.get("img_ids"), ref.get("txt_ids"));
    FAIL() << "no error without guidance";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("guidance"), std::string::npos) << e.what();
  }
  try {
    model->forward(ref.get("hidden_states"), ref.get("encoder_hidden_states"), ref.get("pooled_projections"),
                   ref.get("timestep"), ref.get("txt_ids"), ref.get("txt_ids"), ref.get("guidance"));
    FAIL() << "no error with wrong img_ids";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("img_ids"), std::string::npos) << e.what();
  }
}

// The model keeps the rotary tables of the last ids it saw (a pipeline's steps share them):
// other ids (another resolution, Kontext's reference tokens) must give what a fresh model
// gives, and going back to the first ids what the first call gave.
TEST(FluxTransformer, RotaryTablesFollowTheIds) {
  const std::string dir = fixture("flux_dev_tiny/transformer");
  const WeightStore ref = reference("flux_dev_tiny_ref/transformer.safetensors");
  const Tensor img_a = ref.get("img_ids");
  const Tensor img_b = ops::add_scalar(img_a, 1.0f);  // every axis moved by one
  auto run = [&](const FluxTransformer2DModel& m, const Tensor& img_ids, FluxTransformerTrace* trace = nullptr) {
    return m.forward(ref.get("hidden_states"), ref.get("encoder_hidden_states"), ref.get("pooled_projections"),
                     ref.get("timestep"), img_ids, ref.get("txt_ids"), ref.get("guidance"), trace);
  };
  const auto model = FluxTransformer2DModel::from_pretrained(dir, DType::F32, Device::cpu());
  FluxTransformerTrace ta, tb;
  const Tensor a = run(*model, img_a, &ta);
  const Tensor b = run(*model, img_b, &tb);
  const Tensor a_again = run(*model, img_a);
  const auto fresh = FluxTransformer2DModel::from_pretrained(dir, DType::F32, Device::cpu());
  EXPECT_GT(max_abs_diff(ta.rope_cos, tb.rope_cos), 0.0);
  EXPECT_EQ(max_abs_diff(b, run(*fresh, img_b)), 0.0);
  EXPECT_EQ(max_abs_diff(a_again, a), 0.0);
  expect_close("sample after other ids", a_again, ref.get("sample"));
}
