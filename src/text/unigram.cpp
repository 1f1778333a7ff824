#include "text/unigram.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <tuple>

#include "core/error.h"
#include "text/unicode.h"

namespace vgen::text {
namespace {

constexpr double kUnkPenalty = 10.0;

}  // namespace

UnigramModel::UnigramModel(std::vector<std::pair<std::string, double>> vocab, int64_t unk_id)
    : vocab_(std::move(vocab)), unk_id_(unk_id) {
  VGEN_CHECK(!vocab_.empty(), "Unigram model: empty vocabulary");
  VGEN_CHECK(unk_id_ >= 0 && unk_id_ < size(), "Unigram model: unk_id {} outside the vocabulary of {}", unk_id_,
             size());
  VGEN_CHECK(size() < std::numeric_limits<int32_t>::max(), "Unigram model: vocabulary of {} pieces is too large",
             size());
  double min_score = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < vocab_.size(); ++i) {
    ids_[vocab_[i].first] = static_cast<int64_t>(i);
    min_score = std::min(min_score, vocab_[i].second);
  }
  unk_score_ = min_score - kUnkPenalty;

  // Trie built breadth-first from the sorted distinct pieces so that every node's children
  // are contiguous and sorted by label.
  std::vector<std::string_view> pieces;
  pieces.reserve(ids_.size());
  for (const auto& [piece, id] : ids_)
    if (!piece.empty()) pieces.push_back(piece);
  std::sort(pieces.begin(), pieces.end());  // string_view compares bytes as unsigned char
  trie_.emplace_back();
  struct Pending {
    size_t node, lo, hi, depth;
  };
  std::deque<Pending> queue{{0, 0, pieces.size(), 0}};
  while (!queue.empty()) {
    auto [node, lo, hi, depth] = queue.front();
    queue.pop_front();
    if (lo < hi && pieces[lo].size() == depth) trie_[node].id = static_cast<int32_t>(ids_.at(pieces[lo++]));
    trie_[node].first_child = static_cast<uint32_t>(trie_.size());
    while (lo < hi) {
      const auto c = static_cast<unsigned char>(pieces[lo][depth]);
      size_t end = lo;
      while (end < hi && static_cast<unsigned char>(pieces[end][depth]) == c) ++end;
      Node child;
      child.label = c;
      queue.push_back({trie_.size(), lo, end, depth + 1});
      trie_.push_back(child);
      ++trie_[node].num_children;
      lo = end;
    }
  }
}

int64_t UnigramModel::token_to_id(std::string_view piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

void UnigramModel::encode(std::string_view word, std::vector<int64_t>& ids) const {
  if (word.empty()) return;
  // best[e]: best path over word[0, e), ending with piece `id` that starts at `start`.
  struct Best {
    int64_t id = 0;
    double score = 0.0;
    int64_t start = -1;
  };
  const size_t n = word.size();
  std::vector<Best> best(n + 1);
  char32_t cp;
  for (size_t start = 0; start < n;) {
    const size_t mblen = decode_utf8(word, start, &cp);
    VGEN_CHECK(mblen > 0, "Unigram model: not valid UTF-8 at byte {} of a word", start);
    const double base = best[start].score;
    bool has_single_node = false;
    // Walk the trie along word[start..]: every node with a piece is a candidate, shortest first.
    size_t node = 0;
    for (size_t end = start; end < n; ++end) {
      const Node& parent = trie_[node];
      const auto c = static_cast<unsigned char>(word[end]);
      const auto first = trie_.begin() + parent.first_child;
      const auto last = first + parent.num_children;
      const auto it = std::lower_bound(first, last, c, [](const Node& a, unsigned char b) { return a.label < b; });
      if (it == last || it->label != c) break;
      node = static_cast<size_t>(it - trie_.begin());
      if (it->id < 0) continue;
      const size_t key_end = end + 1;
      const double score = vocab_[it->id].second + base;
      Best& target = best[key_end];
      if (target.start < 0 || score > target.score) target = {it->id, score, static_cast<int64_t>(start)};
      if (key_end - start == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      Best& target = best[start + mblen];
      const double score = unk_score_ + base;
      if (target.start < 0 || score > target.score) target = {unk_id_, score, static_cast<int64_t>(start)};
    }
    start += mblen;
  }

  // Backtrack; a run of unknown pieces becomes one token, looked up as a whole string.
  std::vector<std::tuple<size_t, size_t, int64_t>> pieces;  // (begin, end, id), reversed
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    const auto start = static_cast<size_t>(b.start);
    if (b.id == unk_id_ && !pieces.empty() && std::get<2>(pieces.back()) == unk_id_ &&
        std::get<0>(pieces.back()) == end) {
      std::get<0>(pieces.back()) = start;
    } else {
      pieces.emplace_back(start, end, b.id);
    }
    end = start;
  }
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    const auto [begin, end, id] = *it;
    if (id != unk_id_) {
      ids.push_back(id);
    } else {
      const int64_t fused = token_to_id(word.substr(begin, end - begin));
      ids.push_back(fused >= 0 ? fused : unk_id_);
    }
  }
}

}  // namespace vgen::text
