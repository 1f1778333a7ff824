// UMT5EncoderModel against transformers' UMT5EncoderModel on the fixture checkpoints.
//
// Tolerance: CPU float32 vs torch CPU float32 differs only in summation order (BLAS GEMMs,
// double-accumulated norms and softmax here); over 2-3 layers that stays far below 1e-5
// relative L2, the bound every component is held to.
#include "text/umt5_encoder.h"

#include <gtest/gtest.h>

#include "support/errors.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/json.h"
#include "ops/ops.h"
#include "support/parity.h"
#include "text/prompt_clean.h"
#include "text/tokenizer.h"

using namespace vgen;
namespace fs = std::filesystem;

namespace {

using vgen::testing::error_of;

const char* const kFixtures[] = {"wan21_t2v_tiny", "wan21_t2v_tiny_b"};
constexpr double kTolerance = 1e-5;

// A copy of the fixture's text_encoder folder whose weights and config can be tampered with.
fs::path encoder_copy(const std::string& tag) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("umt5_" + tag);
  fs::remove_all(dir);
  fs::copy(vgen::testing::fixture("wan21_t2v_tiny/text_encoder"), dir);
  return dir;
}

}  // namespace

// transformers' _relative_position_bucket (encoder) on every position in [-1100, 1100] for several
// bucket configurations: exact, including the float32 log at bucket boundaries.
TEST(UMT5Encoder, RelativePositionBucketsMatchTransformers) {
  const Json extra = read_json_file(vgen::testing::fixture("wan21_t2v_tiny_ref/text_extra.json"));
  for (const Json& c : extra.at("relative_position_buckets")) {
    const auto nb = c.at("num_buckets").get<int64_t>(), md = c.at("max_distance").get<int64_t>();
    const auto first = c.at("first_relative_position").get<int64_t>();
    const std::vector<int64_t> expected = c.at("buckets").get<std::vector<int64_t>>();
    for (size_t i = 0; i < expected.size(); ++i) {
      const int64_t rel = first + static_cast<int64_t>(i);
      ASSERT_EQ(relative_position_bucket(rel, nb, md), expected[i]) << "rel " << rel << ", " << nb << "/" << md;
    }
  }
}

TEST(UMT5Encoder, LastHiddenStateMatchesTransformers) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const auto model = UMT5EncoderModel::from_pretrained(vgen::testing::fixture(std::string(name) + "/text_encoder"));
    EXPECT_EQ(model->config().dense_act_fn, "gelu_new");
    EXPECT_TRUE(model->config().is_gated_act);
    const WeightStore ref = vgen::testing::reference(std::string(name) + "_ref/text.safetensors");
    for (const std::string prefix : {"", "negative_"}) {
      const Tensor out = model->forward(ref.get(prefix + "input_ids"), ref.get(prefix + "attention_mask"));
      const double err = vgen::testing::rel_l2(out, ref.get(prefix + "last_hidden_state"));
      std::printf("[ UMT5 %s %slast_hidden_state %s ] rel L2 %.3g, max abs %.3g\n", name, prefix.c_str(),
                  shape_str(out.shape()).c_str(), err,
                  vgen::testing::max_abs_diff(out, ref.get(prefix + "last_hidden_state")));
      EXPECT_LT(err, kTolerance);
    }
  }
}

// diffusers' _get_t5_prompt_embeds end to end: prompt_clean, tokenizer, encoder, then every
// position past a prompt's length zeroed.
TEST(UMT5Encoder, PromptEmbedsMatchDiffusers) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const Json prompts = read_json_file(vgen::testing::fixture(std::string(name) + "_ref/prompts.json"));
    const auto L = prompts.at("max_sequence_length").get<int64_t>();
    std::vector<std::string> cleaned;
    for (const Json& p : prompts.at("prompts")) cleaned.push_back(wan_prompt_clean(p.get<std::string>()));
    const T5Tokenizer tok = T5Tokenizer::from_pretrained(vgen::testing::fixture(std::string(name) + "/tokenizer"));
    const auto model = UMT5EncoderModel::from_pretrained(vgen::testing::fixture(std::string(name) + "/text_encoder"));
    const TokenizerOutput in = tok(cleaned, L);
    const Tensor embeds = zero_padded_positions(model->forward(in.input_ids, in.attention_mask), in.lengths);
    const Tensor expected = vgen::testing::reference(std::string(name) + "_ref/text.safetensors").get("prompt_embeds");
    const double err = vgen::testing::rel_l2(embeds, expected);
    std::printf("[ UMT5 %s prompt_embeds ] rel L2 %.3g\n", name, err);
    EXPECT_LT(err, kTolerance);
    // Exact zeros past each length, as diffusers' u.new_zeros.
    for (int64_t b = 0; b < embeds.size(0); ++b) {
      if (in.lengths[b] < L)
        EXPECT_EQ(ops::sum_abs(embeds.select(0, b).narrow(0, in.lengths[b], L - in.lengths[b])), 0.0);
    }
  }
}

// A mask with holes, and a row with every key masked: transformers' finfo(float32).min bias
// leaves masked keys out exactly and makes the fully masked row attend uniformly.
TEST(UMT5Encoder, ArbitraryAndFullyMaskedRows) {
  const auto model = UMT5EncoderModel::from_pretrained(vgen::testing::fixture("wan21_t2v_tiny/text_encoder"));
  const WeightStore ref = vgen::testing::reference("wan21_t2v_tiny_ref/text_extra.safetensors");
  const Tensor out = model->forward(ref.get("input_ids"), ref.get("attention_mask"));
  const double err = vgen::testing::rel_l2(out, ref.get("last_hidden_state"));
  std::printf("[ UMT5 custom mask ] rel L2 %.3g\n", err);
  EXPECT_LT(err, kTolerance);
  EXPECT_LT(vgen::testing::rel_l2(out.select(0, 1), ref.get("last_hidden_state").select(0, 1)), kTolerance);
}

// bf16 weights and activations (torch_dtype=torch.bfloat16 in transformers). Rounding points
// differ (the CPU ops round once per op), so the bound is bf16-sized: within 2e-2 of torch's
// bf16 run, and no further from the float32 reference than 1.5x torch's own bf16 error.
TEST(UMT5Encoder, Bf16CloseToTransformersBf16) {
  const auto model =
      UMT5EncoderModel::from_pretrained(vgen::testing::fixture("wan21_t2v_tiny/text_encoder"), DType::BF16);
  const WeightStore text = vgen::testing::reference("wan21_t2v_tiny_ref/text.safetensors");
  const WeightStore extra = vgen::testing::reference("wan21_t2v_tiny_ref/text_extra.safetensors");
  const Tensor out = model->forward(text.get("input_ids"), text.get("attention_mask"));
  EXPECT_EQ(out.dtype(), DType::BF16);
  const Tensor f32 = text.get("last_hidden_state"), torch_bf16 = extra.get("last_hidden_state_bf16").to(DType::F32);
  const double vs_torch = vgen::testing::rel_l2(out.to(DType::F32), torch_bf16);
  const double ours = vgen::testing::rel_l2(out.to(DType::F32), f32), theirs = vgen::testing::rel_l2(torch_bf16, f32);
  std::printf("[ UMT5 bf16 ] rel L2 vs torch bf16 %.3g; vs float32: vgen %.3g, torch %.3g\n", vs_torch, ours, theirs);
  EXPECT_LT(vs_torch, 2e-2);
  EXPECT_LT(ours, 1.5 * theirs);
}

TEST(UMT5Encoder, ZeroPaddedPositions) {
  const Tensor h = Tensor::full({2, 3, 2}, 1.0f);
  const Tensor z = zero_padded_positions(h, {1, 3});
  EXPECT_EQ(z.to_vector(), (std::vector<float>{1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}));
  EXPECT_THROW(zero_padded_positions(h, {4, 0}), Error);
  EXPECT_THROW(zero_padded_positions(h, {1}), Error);
}

TEST(UMT5Encoder, ErrorsNameTheTensorOrFieldAtFault) {
  EXPECT_NE(error_of([] { UMT5EncoderModel::from_pretrained("/nonexistent/text_encoder"); }).find("folder not found"),
            std::string::npos);

  // A missing tensor: the error names it and the folder.
  const fs::path missing = encoder_copy("missing");
  {
    const WeightStore store = WeightStore::open_files({(missing / "model.safetensors").string()});
    std::map<std::string, Tensor> tensors;
    for (const std::string& n : store.names())
      if (n != "encoder.block.1.layer.1.DenseReluDense.wi_1.weight") tensors[n] = store.get(n).clone();
    fs::remove(missing / "model.safetensors");
    save_safetensors((missing / "model.safetensors").string(), tensors);
  }
  const std::string e1 = error_of([&] { UMT5EncoderModel::from_pretrained(missing.string()); });
  EXPECT_NE(e1.find("missing tensor 'encoder.block.1.layer.1.DenseReluDense.wi_1.weight'"), std::string::npos) << e1;
  EXPECT_NE(e1.find(missing.string()), std::string::npos) << e1;

  // A config that disagrees with the weights: the shape check names the tensor.
  const fs::path shape = encoder_copy("shape");
  Json config = read_json_file((shape / "config.json").string());
  config["d_ff"] = 48;
  std::ofstream((shape / "config.json").string()) << config.dump(2);
  const std::string e2 = error_of([&] { UMT5EncoderModel::from_pretrained(shape.string()); });
  EXPECT_NE(e2.find("'encoder.block.0.layer.1.DenseReluDense.wi_0.weight' has shape [64, 32], expected [48, 32]"),
            std::string::npos)
      << e2;

  config["d_ff"] = 64;
  config["model_type"] = "t5";
  std::ofstream((shape / "config.json").string()) << config.dump(2);
  const std::string e3 = error_of([&] { UMT5EncoderModel::from_pretrained(shape.string()); });
  EXPECT_NE(e3.find("config.json: model_type is 't5'"), std::string::npos) << e3;

  config["model_type"] = "umt5";
  config["feed_forward_proj"] = "gated-swish";
  std::ofstream((shape / "config.json").string()) << config.dump(2);
  const std::string e4 = error_of([&] { UMT5EncoderModel::from_pretrained(shape.string()); });
  EXPECT_NE(e4.find("activation 'swish' is not supported"), std::string::npos) << e4;

  const auto model = UMT5EncoderModel::from_pretrained(vgen::testing::fixture("wan21_t2v_tiny/text_encoder"));
  const Tensor ids = Tensor::from_vector_i64({0, 1, 600}, {1, 3});
  const Tensor mask = Tensor::from_vector_i64({1, 1, 1}, {1, 3});
  EXPECT_NE(error_of([&] { model->forward(ids, mask); }).find("token id 600 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] {
              model->forward(ids, Tensor::from_vector_i64({1, 1}, {1, 2}));
            }).find("does not match"),
            std::string::npos);
}
