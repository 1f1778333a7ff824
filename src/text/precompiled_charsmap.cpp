#include "text/precompiled_charsmap.h"

#include <cstring>

#include "core/error.h"
#include "text/unicode.h"

namespace vgen::text {
namespace {

// darts-clone unit layout.
bool has_leaf(uint32_t unit) { return (unit >> 8) & 1; }
uint32_t value(uint32_t unit) { return unit & ((1u << 31) - 1); }
uint32_t label(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

}  // namespace

PrecompiledCharsmap::PrecompiledCharsmap(std::string_view blob, const std::string& where) {
  uint32_t trie_bytes = 0;
  if (blob.size() < 4) fail("{}: precompiled_charsmap is truncated ({} bytes)", where, blob.size());
  std::memcpy(&trie_bytes, blob.data(), 4);  // little-endian, as on every supported host
  if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob.size() - 4)
    fail("{}: precompiled_charsmap declares a trie of {} bytes in a blob of {}", where, trie_bytes, blob.size());
  units_.resize(trie_bytes / 4);
  std::memcpy(units_.data(), blob.data() + 4, trie_bytes);
  normalized_.assign(blob.substr(4 + trie_bytes));
}

std::optional<std::string_view> PrecompiledCharsmap::transform(std::string_view key) const {
  size_t node = offset(units_[0]);
  for (const char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == 0) break;
    node ^= c;
    if (node >= units_.size()) return std::nullopt;
    const uint32_t unit = units_[node];
    if (label(unit) != c) return std::nullopt;
    node ^= offset(unit);
    if (node >= units_.size()) return std::nullopt;
    if (has_leaf(unit)) {
      const size_t begin = value(units_[node]);
      if (begin >= normalized_.size()) return std::nullopt;
      const size_t end = normalized_.find('\0', begin);
      return std::string_view(normalized_).substr(begin, (end == std::string::npos ? normalized_.size() : end) - begin);
    }
  }
  return std::nullopt;
}

std::string PrecompiledCharsmap::normalize(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t cluster = grapheme_length(text, pos);
    const std::string_view grapheme = text.substr(pos, cluster);
    pos += cluster;
    if (grapheme.size() < 6) {
      if (auto norm = transform(grapheme)) {
        out += *norm;
        continue;
      }
    }
    char32_t cp;
    for (size_t i = 0; i < grapheme.size();) {
      const std::string_view part = grapheme.substr(i, decode_utf8(grapheme, i, &cp));
      i += part.size();
      if (auto norm = transform(part)) {
        out += *norm;
      } else {
        out += part;
      }
    }
  }
  return out;
}

}  // namespace vgen::text
