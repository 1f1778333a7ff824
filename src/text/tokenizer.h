// The T5 / UMT5 tokenizer as transformers 5 runs it for diffusers' Wan pipelines
// (`T5Tokenizer`, tokenizers backend):
//
//   tokenizer(texts, padding="max_length", max_length=N, truncation=True,
//             add_special_tokens=True, return_attention_mask=True)
//
// Added tokens (<pad>, </s>, <unk>, <extra_id_N>, ...) are split out of the raw text first
// (leftmost-longest match); every other segment is normalized with the SentencePiece
// charsmap, split on whitespace, prefixed with "▁" (Metaspace, prepend "always") and segmented
// by the Unigram model; runs of unknown characters become one <unk> (no byte fallback, as
// transformers 5's T5Tokenizer builds it). Truncation keeps room for the appended </s>.
//
// Two sources for the model, chosen by from_pretrained:
// * `spiece.model` through the SentencePiece library for the segmentation; its charsmap is
//   taken out of the model and applied the way transformers reads it (PrecompiledCharsmap,
//   per grapheme cluster, where SentencePiece matches the longest prefix); the vocabulary is
//   extended by the tokenizer_config.json `extra_ids` sentinels, <extra_id_0> last, like
//   transformers' T5Converter (default 100). One known difference: the sentinels are split out
//   of the text like the added tokens of a tokenizer.json, whereas transformers, given
//   spiece.model alone, leaves them to the Unigram model, so text glued after one
//   ("<extra_id_0>c") gets no "▁" there.
// * `tokenizer.json` (Unigram model) with its own implementation of the pipeline above. As in
//   transformers 5, only the vocabulary, unk_id, added_tokens and the Precompiled charsmap are
//   taken from the file; its normalizer steps other than Precompiled and its pre_tokenizer are
//   replaced by the fixed T5 pipeline (WhitespaceSplit + Metaspace).
// Added tokens come from tokenizer.json's added_tokens, the pad/eos/unk tokens, and
// tokenizer_config.json's additional_special_tokens / extra_special_tokens /
// added_tokens_decoder; one outside the vocabulary gets the next free id, in that order.
// Not supported: the single_word and normalized=true matching rules of added tokens (they are
// matched like the special tokens, lstrip/rstrip honoured), tokenizer.json models other than
// Unigram.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen {

struct TokenizerOutput {
  Tensor input_ids;              // I64 [B, max_length], right-padded with the pad id
  Tensor attention_mask;         // I64 [B, max_length], 1 on real tokens (including </s>)
  std::vector<int64_t> lengths;  // real tokens per text (diffusers' seq_lens)
};

namespace text {

// The padding="max_length", truncation=True loop that T5Tokenizer and CLIPTokenizer share: each
// text (checked as UTF-8, "tokenizer input B" in errors) is split into ids by `encode_text`,
// cut to the room max_length leaves beside the special tokens, framed as [bos] ids eos (bos
// when given) and right-padded with pad_id; the mask is 1 on the framed ids. `on_truncated` is
// called with the text's index and the ids that were cut off. Each tokenizer refuses, in its
// own words, a max_length without room for its special tokens before calling this.
using EncodeText = std::function<std::vector<int64_t>(const std::string& text)>;
using OnTruncated = std::function<void(size_t index, const std::vector<int64_t>& removed_ids)>;
TokenizerOutput pad_and_truncate(const std::vector<std::string>& texts, int64_t max_length,
                                 const EncodeText& encode_text, std::optional<int64_t> bos_id, int64_t eos_id,
                                 int64_t pad_id, const OnTruncated& on_truncated = {});

}  // namespace text

enum class TokenizerSource {
  Auto,           // spiece.model when present, else tokenizer.json
  SentencePiece,  // spiece.model
  TokenizerJson,  // tokenizer.json
};

class T5Tokenizer {
 public:
  // Loads a checkpoint's `tokenizer/` folder: spiece.model and/or tokenizer.json, plus the
  // optional tokenizer_config.json and special_tokens_map.json (pad/eos/unk tokens, extra_ids,
  // additional special tokens). Throws vgen::Error naming the folder or file at fault.
  static T5Tokenizer from_pretrained(const std::string& dir, TokenizerSource source = TokenizerSource::Auto);

  T5Tokenizer(T5Tokenizer&&) noexcept;
  T5Tokenizer& operator=(T5Tokenizer&&) noexcept;
  ~T5Tokenizer();

  // Padded / truncated batch, as the Wan pipeline calls the tokenizer. max_length >= 1.
  TokenizerOutput operator()(const std::vector<std::string>& texts, int64_t max_length) const;
  // Ids of one text with </s> appended, no truncation or padding (tokenizer(text).input_ids).
  std::vector<int64_t> encode(const std::string& text) const;

  // Number of ids (vocabulary plus added tokens outside it): len(tokenizer) in transformers.
  int64_t vocab_size() const;
  int64_t pad_token_id() const;
  int64_t eos_token_id() const;
  int64_t unk_token_id() const;
  // Id of a vocabulary piece or added token, or -1.
  int64_t token_to_id(const std::string& token) const;
  TokenizerSource source() const;

 private:
  struct Impl;
  explicit T5Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vgen
