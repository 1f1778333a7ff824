// SentencePiece's `precompiled_charsmap` (e.g. nmt_nfkc) as tokenizers' `Precompiled` normalizer
// applies it: a darts-clone double-array trie from UTF-8 sequences to replacement strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vgen::text {

class PrecompiledCharsmap {
 public:
  // Parses the blob: u32 trie size in bytes, the trie units, then the NUL-separated
  // replacements. Throws vgen::Error naming `where` when it is malformed.
  PrecompiledCharsmap(std::string_view blob, const std::string& where);

  // tokenizers' Precompiled::normalize: a grapheme cluster shorter than 6 bytes is replaced as
  // a whole by the replacement of its SHORTEST matching prefix (so "Ａ\u0301" becomes "A",
  // dropping the accent, unlike SentencePiece itself); otherwise, or when nothing matches,
  // each code point is replaced on its own or kept.
  std::string normalize(std::string_view text) const;

 private:
  std::optional<std::string_view> transform(std::string_view key) const;

  std::vector<uint32_t> units_;
  std::string normalized_;
};

}  // namespace vgen::text
