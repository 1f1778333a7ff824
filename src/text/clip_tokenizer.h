// transformers 5's CLIPTokenizer (models/clip/tokenization_clip.py, tokenizers backend; the
// same class as CLIPTokenizerFast) as diffusers' FluxPipeline calls it for text_encoder:
//
//   tokenizer(prompts, padding="max_length", max_length=77, truncation=True)
//
// The pipeline, fixed by the class whatever tokenizer.json says (transformers 5 takes only the
// vocabulary, the merges and the added tokens from the files):
// 1. added tokens (<|startoftext|>, <|endoftext|>, and any other in tokenizer.json's
//    added_tokens / tokenizer_config.json's added_tokens_decoder) are split out of the raw text;
// 2. normalizer: NFC, every run of Unicode whitespace -> " ", lowercase (per code point, as
//    Rust's char::to_lowercase);
// 3. pre-tokenizer: the pieces matching
//      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//    (whitespace between them dropped), each mapped to GPT-2's byte-level alphabet;
// 4. BPE with end_of_word_suffix "</w>" on the last symbol of each piece, merges applied by
//    rank; a symbol outside the vocabulary becomes the unk token (one per symbol);
// 5. post-processor: <|startoftext|> ids <|endoftext|> (RobertaProcessing); truncation keeps
//    room for both, padding appends the pad token on the right.
// The ftfy / BasicTokenizer cleanup of the old slow tokenizer is not part of this class.
// Unicode properties (letter/number categories, NFC, lowercase) come from generated tables
// (text/unicode_tables.*), Unicode 14 as in Python's unicodedata that made them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace vgen {

class CLIPTokenizer {
 public:
  // Called once per prompt that truncation shortened, with its index in the batch and the
  // removed part decoded as diffusers' warning shows it (tokenizer.batch_decode of
  // untruncated_ids[:, max_length - 1 : -1]).
  using TruncationCallback = std::function<void(size_t index, const std::string& removed_text)>;

  // Loads a checkpoint's `tokenizer/` folder: tokenizer.json (BPE model: vocab + merges), or
  // vocab.json + merges.txt; plus the optional tokenizer_config.json and
  // special_tokens_map.json (bos/eos/unk/pad tokens, model_max_length). Throws vgen::Error
  // naming the folder or file at fault.
  static CLIPTokenizer from_pretrained(const std::string& dir);

  CLIPTokenizer(CLIPTokenizer&&) noexcept;
  CLIPTokenizer& operator=(CLIPTokenizer&&) noexcept;
  ~CLIPTokenizer();

  // Padded / truncated batch (max_length >= 2: room for bos and eos). `on_truncated` is called
  // for each prompt longer than max_length tokens.
  TokenizerOutput operator()(const std::vector<std::string>& texts, int64_t max_length = 77,
                             const TruncationCallback& on_truncated = {}) const;
  // Ids of one text with bos and eos, no truncation or padding (tokenizer(text).input_ids).
  std::vector<int64_t> encode(const std::string& text) const;
  // tokenizer.decode(ids): tokens joined, byte-level decoded, "</w>" -> " ", stripped; with
  // skip_special_tokens the added special tokens are dropped first.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  // len(tokenizer): vocabulary plus added tokens outside it.
  int64_t vocab_size() const;
  int64_t bos_token_id() const;
  int64_t eos_token_id() const;
  int64_t pad_token_id() const;
  int64_t unk_token_id() const;
  // tokenizer_config.json's model_max_length (77 for CLIP-L), or 77 when absent.
  int64_t model_max_length() const;
  // Id of a vocabulary entry or added token, or -1.
  int64_t token_to_id(const std::string& token) const;

 private:
  struct Impl;
  explicit CLIPTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vgen
