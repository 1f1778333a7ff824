// FLUX.1's text side against transformers / diffusers on tests/fixtures/flux_text_tiny
// (tools/fixtures/make_flux_text_fixtures.py): CLIPTokenizer and the T5 tokenizer bit-exact
// on a table of hard strings, CLIPTextModel and T5EncoderModel within float32 rounding.
//
// Tolerance of the encoders: CPU float32 vs torch CPU float32 differs only in summation order
// (BLAS GEMMs, double-accumulated norms and softmax here) and in quick_gelu written as
// silu(1.702 x) / 1.702 (an ulp or two); over 3 layers that stays near 1e-7 relative L2, held
// to 1e-5 as every component.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/json.h"
#include "support/errors.h"
#include "support/parity.h"
#include "text/clip_text_model.h"
#include "text/clip_tokenizer.h"
#include "text/t5_encoder.h"
#include "text/tokenizer.h"
#include "text/umt5_encoder.h"

using namespace vgen;
namespace fs = std::filesystem;
using vgen::testing::error_of;
using vgen::testing::fixture;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

constexpr double kTolerance = 1e-5;
const std::string kDir = "flux_text_tiny";

const Json& cases_json() {
  static const Json j = read_json_file(fixture(kDir + "/reference/tokenizer_cases.json"));
  return j;
}

std::string printable(const std::string& s) { return s.size() > 60 ? s.substr(0, 60) + "..." : s; }

std::vector<int64_t> row(const Tensor& ids, int64_t b) {
  const Tensor r = ids.select(0, b).contiguous();
  return std::vector<int64_t>(r.data<int64_t>(), r.data<int64_t>() + r.numel());
}

bool ops_equal_i64(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != DType::I64 || b.dtype() != DType::I64) return false;
  for (int64_t i = 0; i < a.size(0); ++i)
    if (row(a, i) != row(b, i)) return false;
  return true;
}

// A copy of a fixture folder that a test may tamper with.
fs::path folder_copy(const std::string& relative, const std::string& tag) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("flux_text_" + tag);
  fs::remove_all(dir);
  fs::copy(fixture(kDir + "/" + relative), dir, fs::copy_options::recursive);
  return dir;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CLIP tokenizer
// ---------------------------------------------------------------------------------------------

TEST(CLIPTokenizer, IdsMatchTransformersOnHardStrings) {
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  const CLIPTokenizer json_tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/reference/clip_tokenizer_json"));
  EXPECT_EQ(tok.model_max_length(), 77);
  int n = 0;
  for (const Json& c : cases_json().at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE(printable(text));
    EXPECT_EQ(tok.encode(text), c.at("clip_ids").get<std::vector<int64_t>>());
    EXPECT_EQ(json_tok.encode(text), c.at("clip_json_ids").get<std::vector<int64_t>>());
    ++n;
  }
  EXPECT_GE(n, 25);
}

TEST(CLIPTokenizer, PaddedBatchAndTruncationWarningMatchDiffusers) {
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  std::vector<std::string> texts;
  for (const Json& c : cases_json().at("cases")) texts.push_back(c.at("text").get<std::string>());
  std::map<size_t, std::string> removed;
  const TokenizerOutput out = tok(texts, 77, [&](size_t i, const std::string& r) { removed[i] = r; });
  ASSERT_EQ(out.input_ids.shape(), (Shape{static_cast<int64_t>(texts.size()), 77}));
  size_t i = 0;
  for (const Json& c : cases_json().at("cases")) {
    SCOPED_TRACE(printable(texts[i]));
    const std::vector<int64_t> expected = c.at("clip_padded").get<std::vector<int64_t>>();
    EXPECT_EQ(row(out.input_ids, static_cast<int64_t>(i)), expected);
    const auto n = std::min<int64_t>(static_cast<int64_t>(c.at("clip_ids").size()), 77);
    EXPECT_EQ(out.lengths[i], n);
    const std::vector<int64_t> mask = row(out.attention_mask, static_cast<int64_t>(i));
    for (int64_t k = 0; k < 77; ++k) EXPECT_EQ(mask[static_cast<size_t>(k)], k < n ? 1 : 0);
    if (c.at("clip_removed").is_null()) {
      EXPECT_EQ(removed.count(i), 0u);
    } else {
      ASSERT_EQ(removed.count(i), 1u);
      EXPECT_EQ(removed[i], c.at("clip_removed").get<std::string>());
    }
    ++i;
  }
  EXPECT_GE(removed.size(), 2u);  // the two long texts
}

TEST(CLIPTokenizer, DecodeMatchesTransformers) {
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  for (const Json& c : cases_json().at("cases")) {
    SCOPED_TRACE(printable(c.at("text").get<std::string>()));
    const std::vector<int64_t> ids = c.at("clip_ids").get<std::vector<int64_t>>();
    EXPECT_EQ(tok.decode(ids), c.at("clip_decode").get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), c.at("clip_decode_skip").get<std::string>());
  }
}

TEST(CLIPTokenizer, SpecialTokenIds) {
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  const int64_t n = tok.vocab_size();
  EXPECT_EQ(tok.bos_token_id(), n - 2);
  EXPECT_EQ(tok.eos_token_id(), n - 1);
  EXPECT_EQ(tok.pad_token_id(), n - 1);
  EXPECT_EQ(tok.unk_token_id(), n - 1);
  EXPECT_EQ(tok.token_to_id("<|startoftext|>"), n - 2);
  EXPECT_EQ(tok.token_to_id("no such token"), -1);
}

TEST(CLIPTokenizer, BadInputNamesTheCulprit) {
  EXPECT_NE(error_of([] { CLIPTokenizer::from_pretrained("/nonexistent/tokenizer"); }).find("tokenizer folder not found"),
            std::string::npos);
  const fs::path empty = folder_copy("tokenizer", "tok_empty");
  fs::remove(empty / "merges.txt");
  EXPECT_NE(error_of([&] { CLIPTokenizer::from_pretrained(empty.string()); }).find("vocab.json and merges.txt"),
            std::string::npos);
  const fs::path bad = folder_copy("tokenizer", "tok_bad_merge");
  write_text(bad / "merges.txt", "#version: 0.2\nt h\nno_such_symbol x\n");
  const std::string e = error_of([&] { CLIPTokenizer::from_pretrained(bad.string()); });
  EXPECT_NE(e.find("merge 1 \"no_such_symbol x\" uses a symbol outside the vocabulary"), std::string::npos) << e;
  write_text(bad / "merges.txt", "#version: 0.2\nt h extra\n");
  EXPECT_NE(error_of([&] { CLIPTokenizer::from_pretrained(bad.string()); }).find("merges.txt: line 2"),
            std::string::npos);
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  EXPECT_NE(error_of([&] { tok({"a"}, 1); }).find("max_length must be at least 2"), std::string::npos);
  EXPECT_NE(error_of([&] { tok({"ok", "bad \xff utf-8"}, 77); }).find("tokenizer input 1"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({1 << 20}); }).find("outside the vocabulary"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// T5 tokenizer (the existing T5Tokenizer, from tokenizer.json as T5TokenizerFast)
// ---------------------------------------------------------------------------------------------

TEST(FluxT5Tokenizer, IdsAndPaddingMatchTransformers) {
  const T5Tokenizer tok = T5Tokenizer::from_pretrained(fixture(kDir + "/tokenizer_2"));
  const auto max_length = cases_json().at("t5_max_length").get<int64_t>();
  std::vector<std::string> texts;
  for (const Json& c : cases_json().at("cases")) texts.push_back(c.at("text").get<std::string>());
  const TokenizerOutput out = tok(texts, max_length);
  size_t i = 0;
  for (const Json& c : cases_json().at("cases")) {
    SCOPED_TRACE(printable(texts[i]));
    EXPECT_EQ(tok.encode(texts[i]), c.at("t5_ids").get<std::vector<int64_t>>());
    // t5_padded is stored without its trailing <pad> ids.
    std::vector<int64_t> expected = c.at("t5_padded").get<std::vector<int64_t>>();
    expected.resize(static_cast<size_t>(max_length), tok.pad_token_id());
    EXPECT_EQ(row(out.input_ids, static_cast<int64_t>(i)), expected);
    ++i;
  }
}

// ---------------------------------------------------------------------------------------------
// CLIPTextModel
// ---------------------------------------------------------------------------------------------

TEST(CLIPTextModel, OutputsMatchTransformers) {
  const auto model = CLIPTextModel::from_pretrained(fixture(kDir + "/text_encoder"));
  EXPECT_EQ(model->config().hidden_act, "quick_gelu");
  EXPECT_EQ(model->config().eos_token_id, 2);
  const WeightStore ref = reference(kDir + "/reference/text_encoders.safetensors");
  const CLIPTextModelOutput out = model->forward(ref.get("clip_input_ids"));
  const double e1 = rel_l2(out.last_hidden_state, ref.get("clip_last_hidden_state"));
  const double e2 = rel_l2(out.pooler_output, ref.get("clip_pooler_output"));
  std::printf("[ CLIPTextModel ] last_hidden_state rel L2 %.3g, pooler_output rel L2 %.3g\n", e1, e2);
  EXPECT_LT(e1, kTolerance);
  EXPECT_LT(e2, kTolerance);
}

// The tokenizer's ids straight into the model, as FluxPipeline._get_clip_prompt_embeds.
TEST(CLIPTextModel, PooledPromptEmbedsFromPrompts) {
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  const auto model = CLIPTextModel::from_pretrained(fixture(kDir + "/text_encoder"));
  const WeightStore ref = reference(kDir + "/reference/text_encoders.safetensors");
  const std::vector<std::string> prompts = cases_json().at("prompts").get<std::vector<std::string>>();
  const TokenizerOutput in = tok(prompts, 77);
  EXPECT_TRUE(ops_equal_i64(in.input_ids, ref.get("clip_input_ids")));
  const double err = rel_l2(model->forward(in.input_ids).pooler_output, ref.get("clip_pooler_output"));
  EXPECT_LT(err, kTolerance);
}

// Pooling: the first largest id with the legacy eos_token_id 2, the first eos id otherwise.
TEST(CLIPTextModel, PoolingFollowsEosTokenId) {
  const WeightStore ref = reference(kDir + "/reference/text_encoders.safetensors");
  const auto model = CLIPTextModel::from_pretrained(fixture(kDir + "/text_encoder"));
  const double e2 = rel_l2(model->forward(ref.get("clip_random_ids")).pooler_output, ref.get("clip_random_pooler_eos2"));
  EXPECT_LT(e2, kTolerance);

  const fs::path dir = folder_copy("text_encoder", "clip_eos");
  Json config = read_json_file((dir / "config.json").string());
  const CLIPTokenizer tok = CLIPTokenizer::from_pretrained(fixture(kDir + "/tokenizer"));
  config["eos_token_id"] = tok.eos_token_id();
  write_text(dir / "config.json", config.dump());
  const auto eos_model = CLIPTextModel::from_pretrained(dir.string());
  const double e = rel_l2(eos_model->forward(ref.get("clip_random_ids")).pooler_output, ref.get("clip_random_pooler_eos"));
  EXPECT_LT(e, kTolerance);
}

TEST(CLIPTextModel, BadInputNamesTheCulprit) {
  EXPECT_NE(error_of([] { CLIPTextModel::from_pretrained("/nonexistent/text_encoder"); }).find("folder not found"),
            std::string::npos);
  const fs::path dir = folder_copy("text_encoder", "clip_bad");
  Json config = read_json_file((dir / "config.json").string());
  config["hidden_act"] = "swish";
  write_text(dir / "config.json", config.dump());
  EXPECT_NE(error_of([&] { CLIPTextModel::from_pretrained(dir.string()); }).find("hidden_act"), std::string::npos);
  config["hidden_act"] = "quick_gelu";
  config["intermediate_size"] = 40;
  write_text(dir / "config.json", config.dump());
  const std::string e = error_of([&] { CLIPTextModel::from_pretrained(dir.string()); });
  EXPECT_NE(e.find("encoder.layers.0.mlp.fc1.weight"), std::string::npos) << e;
  config["intermediate_size"] = 37;
  config["num_hidden_layers"] = 2;
  write_text(dir / "config.json", config.dump());
  const std::string e2 = error_of([&] { CLIPTextModel::from_pretrained(dir.string()); });
  EXPECT_NE(e2.find("encoder.layers.2."), std::string::npos) << e2;
  config["model_type"] = "t5";
  write_text(dir / "config.json", config.dump());
  EXPECT_NE(error_of([&] { CLIPTextModel::from_pretrained(dir.string()); }).find("model_type"), std::string::npos);

  const auto model = CLIPTextModel::from_pretrained(fixture(kDir + "/text_encoder"));
  const Tensor long_ids = Tensor::zeros({1, 78}, DType::I64);
  EXPECT_NE(error_of([&] { model->forward(long_ids); }).find("exceeds max_position_embeddings"), std::string::npos);
  EXPECT_NE(error_of([&] { model->forward(Tensor::zeros({1, 5}, DType::F32)); }).find("input_ids"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// T5EncoderModel
// ---------------------------------------------------------------------------------------------

TEST(T5EncoderModel, LastHiddenStateMatchesTransformers) {
  const auto model = T5EncoderModel::from_pretrained(fixture(kDir + "/text_encoder_2"));
  EXPECT_EQ(model->config().model_type, "t5");
  EXPECT_FALSE(model->config().relative_bias_per_layer());
  EXPECT_EQ(model->config().dense_act_fn, "gelu_new");
  const WeightStore ref = reference(kDir + "/reference/text_encoders.safetensors");
  // FluxPipeline: 512 ids, no attention mask (padding attended).
  const Tensor out = model->forward(ref.get("t5_input_ids"));
  const double e1 = rel_l2(out, ref.get("t5_last_hidden_state"));
  // With the tokenizer's mask.
  const Tensor masked = model->forward(ref.get("t5_masked_input_ids"), ref.get("t5_masked_attention_mask"));
  const double e2 = rel_l2(masked, ref.get("t5_masked_last_hidden_state"));
  std::printf("[ T5EncoderModel ] last_hidden_state rel L2 %.3g (512, no mask), %.3g (64, masked)\n", e1, e2);
  EXPECT_LT(e1, kTolerance);
  EXPECT_LT(e2, kTolerance);
}

// FluxPipeline._get_t5_prompt_embeds end to end: tokenizer_2 then text_encoder_2.
TEST(T5EncoderModel, PromptEmbedsFromPrompts) {
  const T5Tokenizer tok = T5Tokenizer::from_pretrained(fixture(kDir + "/tokenizer_2"));
  const auto model = T5EncoderModel::from_pretrained(fixture(kDir + "/text_encoder_2"));
  const WeightStore ref = reference(kDir + "/reference/text_encoders.safetensors");
  const TokenizerOutput in = tok(cases_json().at("prompts").get<std::vector<std::string>>(), 512);
  EXPECT_TRUE(ops_equal_i64(in.input_ids, ref.get("t5_input_ids")));
  EXPECT_LT(rel_l2(model->forward(in.input_ids), ref.get("t5_last_hidden_state")), kTolerance);
}

TEST(T5EncoderModel, ModelTypesAreNotMixed) {
  const std::string e1 = error_of([] { UMT5EncoderModel::from_pretrained(fixture(kDir + "/text_encoder_2")); });
  EXPECT_NE(e1.find("model_type is 't5', expected 'umt5'"), std::string::npos) << e1;
  const std::string e2 = error_of([] { T5EncoderModel::from_pretrained(fixture("wan21_t2v_tiny/text_encoder")); });
  EXPECT_NE(e2.find("model_type is 'umt5', expected 't5'"), std::string::npos) << e2;
  // A T5 checkpoint with a bias table in a later block is another model.
  const fs::path dir = folder_copy("text_encoder_2", "t5_extra");
  Json config = read_json_file((dir / "config.json").string());
  config["num_layers"] = 2;
  write_text(dir / "config.json", config.dump());
  const std::string e3 = error_of([&] { T5EncoderModel::from_pretrained(dir.string()); });
  EXPECT_NE(e3.find("encoder.block.2."), std::string::npos) << e3;
}
