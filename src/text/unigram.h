// The Unigram language-model segmentation of tokenizers' `Unigram` model (SentencePiece's
// algorithm): Viterbi over a trie of the vocabulary, unknown characters scored
// min_score - 10 and fused into one unknown token.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vgen::text {

class UnigramModel {
 public:
  // vocab[i] = (piece, log-probability score) of id i. A piece listed twice keeps its last id,
  // as tokenizers does.
  UnigramModel(std::vector<std::pair<std::string, double>> vocab, int64_t unk_id);

  // Appends the ids of the best segmentation of `word` (valid UTF-8, already normalized and
  // pre-tokenized, e.g. "▁cat") to `ids`.
  void encode(std::string_view word, std::vector<int64_t>& ids) const;

  // Id of a piece, or -1.
  int64_t token_to_id(std::string_view piece) const;
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  struct Node {
    uint32_t first_child = 0;
    uint32_t num_children = 0;
    int32_t id = -1;  // piece ending here, or -1
    unsigned char label = 0;
  };

  std::vector<std::pair<std::string, double>> vocab_;
  std::unordered_map<std::string_view, int64_t> ids_;  // views into vocab_
  std::vector<Node> trie_;                             // node 0 is the root; children contiguous, sorted by label
  int64_t unk_id_;
  double unk_score_;
};

}  // namespace vgen::text
