// T5Tokenizer against transformers 5 (the tokenizer diffusers' WanPipeline calls): token ids and
// attention masks must be identical, through spiece.model and through tokenizer.json alone.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include "support/errors.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/json.h"
#include "support/parity.h"
#include "text/prompt_clean.h"

using namespace vgen;
namespace fs = std::filesystem;

namespace {

using vgen::testing::error_of;

const char* const kFixtures[] = {"wan21_t2v_tiny", "wan21_t2v_tiny_b"};

std::string tokenizer_dir(const std::string& name) { return vgen::testing::fixture(name + "/tokenizer"); }

// The checkpoint's tokenizer folder without spiece.model: only tokenizer.json is left.
std::string json_only_copy(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("tokenizer_json_only_" + name);
  fs::remove_all(dir);
  fs::copy(tokenizer_dir(name), dir);
  fs::remove(dir / "spiece.model");
  return dir.string();
}

std::vector<int64_t> row(const Tensor& t, int64_t b) {
  const Tensor r = t.select(0, b).contiguous();
  return std::vector<int64_t>(r.data<int64_t>(), r.data<int64_t>() + r.numel());
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Every fixture prompt (cleaned as the pipeline does), and the negative prompt, padded and
// truncated to max_sequence_length: ids and mask equal to transformers' exactly.
void expect_fixture_prompts(const T5Tokenizer& tok, const std::string& name) {
  SCOPED_TRACE(name);
  const Json prompts = read_json_file(vgen::testing::fixture(name + "_ref/prompts.json"));
  const auto L = prompts.at("max_sequence_length").get<int64_t>();
  const WeightStore ref = vgen::testing::reference(name + "_ref/text.safetensors");

  std::vector<std::string> cleaned;
  for (const Json& p : prompts.at("prompts")) cleaned.push_back(wan_prompt_clean(p.get<std::string>()));
  const TokenizerOutput out = tok(cleaned, L);
  ASSERT_EQ(out.input_ids.shape(), ref.get("input_ids").shape());
  for (int64_t b = 0; b < static_cast<int64_t>(cleaned.size()); ++b) {
    SCOPED_TRACE(cleaned[b]);
    EXPECT_EQ(row(out.input_ids, b), row(ref.get("input_ids"), b));
    EXPECT_EQ(row(out.attention_mask, b), row(ref.get("attention_mask"), b));
    EXPECT_EQ(out.lengths[b], row(ref.get("seq_lens").unsqueeze(1), b)[0]);
  }
  // prompts[2] is longer than L: truncated to L - 1 pieces + </s>.
  const int64_t untruncated = row(ref.get("num_tokens_untruncated").unsqueeze(1), 2)[0];
  EXPECT_GT(untruncated, L);
  EXPECT_EQ(out.lengths[2], L);
  EXPECT_EQ(row(out.input_ids, 2).back(), tok.eos_token_id());
  EXPECT_EQ(static_cast<int64_t>(tok.encode(cleaned[2]).size()), untruncated);

  const TokenizerOutput neg = tok({wan_prompt_clean(prompts.at("negative_prompt").get<std::string>())}, L);
  EXPECT_EQ(row(neg.input_ids, 0), row(ref.get("negative_input_ids"), 0));
  EXPECT_EQ(row(neg.attention_mask, 0), row(ref.get("negative_attention_mask"), 0));
}

}  // namespace

TEST(T5Tokenizer, FixturePromptsThroughSentencePiece) {
  for (const char* name : kFixtures) {
    const T5Tokenizer tok = T5Tokenizer::from_pretrained(tokenizer_dir(name));
    EXPECT_EQ(tok.source(), TokenizerSource::SentencePiece);
    expect_fixture_prompts(tok, name);
  }
}

TEST(T5Tokenizer, FixturePromptsThroughTokenizerJsonOnly) {
  for (const char* name : kFixtures) {
    const T5Tokenizer tok = T5Tokenizer::from_pretrained(json_only_copy(name));
    EXPECT_EQ(tok.source(), TokenizerSource::TokenizerJson);
    expect_fixture_prompts(tok, name);
  }
}

// Raw texts with whitespace of every kind, NFKC through the precompiled charsmap, combining
// marks, unknown characters, added tokens and "▁" inside the text, plus 400 seeded random
// strings over such an alphabet (text_extra.json, from tools/fixtures/make_text_extra.py).
// Both sources must match transformers on every one, including the texts where raw
// SentencePiece (its own longest-match normalization, ' '-only word splits) does not.
TEST(T5Tokenizer, EdgeCasesMatchTransformers) {
  const Json extra = read_json_file(vgen::testing::fixture("wan21_t2v_tiny_ref/text_extra.json"));
  const std::string dir = tokenizer_dir("wan21_t2v_tiny");
  const T5Tokenizer json_tok = T5Tokenizer::from_pretrained(dir, TokenizerSource::TokenizerJson);
  const T5Tokenizer sp_tok = T5Tokenizer::from_pretrained(dir, TokenizerSource::SentencePiece);
  int cases = 0, raw_sentencepiece_differs = 0;
  for (const char* list : {"tokenizer_cases", "random_tokenizer_cases"}) {
    for (const Json& c : extra.at(list)) {
      const std::string text = c.at("text").get<std::string>();
      const std::vector<int64_t> expected = c.at("input_ids").get<std::vector<int64_t>>();
      SCOPED_TRACE(text);
      EXPECT_EQ(json_tok.encode(text), expected);
      EXPECT_EQ(sp_tok.encode(text), expected);
      ++cases;
      raw_sentencepiece_differs += c.at("sentencepiece_differs").get<bool>();
    }
  }
  EXPECT_GT(cases, 400);
  EXPECT_GT(raw_sentencepiece_differs, 10);
}

TEST(T5Tokenizer, SpecialTokensAndVocabulary) {
  for (const TokenizerSource source : {TokenizerSource::SentencePiece, TokenizerSource::TokenizerJson}) {
    const T5Tokenizer tok = T5Tokenizer::from_pretrained(tokenizer_dir("wan21_t2v_tiny"), source);
    EXPECT_EQ(tok.vocab_size(), 512);
    EXPECT_EQ(tok.pad_token_id(), 0);
    EXPECT_EQ(tok.eos_token_id(), 1);
    EXPECT_EQ(tok.unk_token_id(), 2);
    EXPECT_EQ(tok.token_to_id("</s>"), 1);
    EXPECT_EQ(tok.token_to_id("not a piece"), -1);
    EXPECT_EQ(tok.encode(""), (std::vector<int64_t>{1}));
    // max_length 1 leaves room for </s> only.
    const TokenizerOutput out = tok({"a cat", ""}, 1);
    EXPECT_EQ(row(out.input_ids, 0), (std::vector<int64_t>{1}));
    EXPECT_EQ(out.lengths, (std::vector<int64_t>{1, 1}));
  }
}

// Without extra_ids in tokenizer_config.json, transformers' T5Converter appends 100 sentinels
// to the SentencePiece vocabulary in reverse (<extra_id_0> last).
TEST(T5Tokenizer, SentinelsAppendedToSentencePieceVocabulary) {
  const fs::path dir = fs::path(::testing::TempDir()) / "tokenizer_sentinels";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy(fs::path(tokenizer_dir("wan21_t2v_tiny")) / "spiece.model", dir / "spiece.model");
  const T5Tokenizer tok = T5Tokenizer::from_pretrained(dir.string());
  EXPECT_EQ(tok.vocab_size(), 612);
  EXPECT_EQ(tok.token_to_id("<extra_id_0>"), 611);
  EXPECT_EQ(tok.token_to_id("<extra_id_99>"), 512);
  // transformers: tok("a<extra_id_0>").input_ids == [31, 611, 1]
  EXPECT_EQ(tok.encode("a<extra_id_0>"), (std::vector<int64_t>{31, 611, 1}));
}

TEST(T5Tokenizer, ErrorsNameTheFileAtFault) {
  const fs::path root = fs::path(::testing::TempDir()) / "tokenizer_errors";
  fs::remove_all(root);
  fs::create_directories(root);

  EXPECT_NE(
      error_of([&] { T5Tokenizer::from_pretrained((root / "absent").string()); }).find("tokenizer folder not found"),
      std::string::npos);

  const fs::path empty = root / "empty";
  fs::create_directories(empty);
  const std::string no_model = error_of([&] { T5Tokenizer::from_pretrained(empty.string()); });
  EXPECT_NE(no_model.find("expected spiece.model or tokenizer.json"), std::string::npos) << no_model;
  EXPECT_NE(no_model.find(empty.string()), std::string::npos) << no_model;

  const std::string json_only = json_only_copy("wan21_t2v_tiny");
  const std::string no_spiece =
      error_of([&] { T5Tokenizer::from_pretrained(json_only, TokenizerSource::SentencePiece); });
  EXPECT_NE(no_spiece.find("spiece.model: file not found"), std::string::npos) << no_spiece;

  const fs::path malformed = root / "malformed";
  fs::create_directories(malformed);
  write_file(malformed / "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"<pad>\", 0.0],");
  const std::string bad_json = error_of([&] { T5Tokenizer::from_pretrained(malformed.string()); });
  EXPECT_NE(bad_json.find((malformed / "tokenizer.json").string() + ": malformed JSON"), std::string::npos) << bad_json;

  write_file(malformed / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": [["<pad>", 0.0], ["</s>"]]}})");
  const std::string bad_pair = error_of([&] { T5Tokenizer::from_pretrained(malformed.string()); });
  EXPECT_NE(bad_pair.find("tokenizer.json: model.vocab[1] is not a [piece, score] pair"), std::string::npos)
      << bad_pair;

  write_file(malformed / "tokenizer.json", R"({"model": {"type": "BPE", "vocab": {}, "merges": []}})");
  const std::string bpe = error_of([&] { T5Tokenizer::from_pretrained(malformed.string()); });
  EXPECT_NE(bpe.find("tokenizer.json: model type 'BPE' is not supported"), std::string::npos) << bpe;

  write_file(malformed / "tokenizer.json", R"({"model": {"type": "Unigram", "unk_id": 5, "vocab": [["<unk>", 0.0]]}})");
  const std::string unk = error_of([&] { T5Tokenizer::from_pretrained(malformed.string()); });
  EXPECT_NE(unk.find("tokenizer.json: model.unk_id 5 is outside the vocabulary"), std::string::npos) << unk;

  const fs::path garbage = root / "garbage";
  fs::create_directories(garbage);
  write_file(garbage / "spiece.model", "this is not a protobuf");
  const std::string bad_spm = error_of([&] { T5Tokenizer::from_pretrained(garbage.string()); });
  EXPECT_NE(bad_spm.find((garbage / "spiece.model").string() + ": cannot load the SentencePiece model"),
            std::string::npos)
      << bad_spm;

  write_file(garbage / "spiece.model", "");
  const std::string empty_spm = error_of([&] { T5Tokenizer::from_pretrained(garbage.string()); });
  EXPECT_NE(empty_spm.find((garbage / "spiece.model").string() + ": cannot load the SentencePiece model"),
            std::string::npos)
      << empty_spm;

  const T5Tokenizer tok = T5Tokenizer::from_pretrained(tokenizer_dir("wan21_t2v_tiny"));
  EXPECT_NE(error_of([&] { tok({"a"}, 0); }).find("max_length must be at least 1"), std::string::npos);
  EXPECT_NE(error_of([&] {
              tok({"ok", "bad \xff byte"}, 8);
            }).find("tokenizer input 1: not valid UTF-8 at byte 4"),
            std::string::npos);
}
