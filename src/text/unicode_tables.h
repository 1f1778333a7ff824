// Unicode data beyond text/unicode.h, for CLIP's tokenizer (transformers' CLIPTokenizer runs
// NFC, a per-code-point lowercase and a \p{L} / \p{N} regex): generated tables
// (unicode_tables.cpp, from Python's unicodedata by tools/make_unicode_tables.py) and the
// functions over them (unicode_normalize.cpp).
#pragma once

#include <cstddef>
#include <string>

namespace vgen::text {

// General category L* (Lu, Ll, Lt, Lm, Lo): the regex class \p{L}.
bool is_letter(char32_t cp);
// General category N* (Nd, Nl, No): the regex class \p{N}.
bool is_number(char32_t cp);
// Appends cp's full lowercase mapping (Rust's char::to_lowercase, Python's str.lower() of the
// one code point: "İ" -> "i\u0307", "Σ" -> "σ" whatever follows).
void append_lowercase(std::u32string& out, char32_t cp);
// Canonical composition (NFC) of a code point sequence: canonical decomposition, canonical
// ordering of combining marks, then composition (Hangul included).
std::u32string nfc(const std::u32string& text);

namespace tables {

struct CodeRange {
  char32_t first, last;
};
struct CaseMapping {
  char32_t cp;
  char32_t to[3];  // 0-terminated when shorter
};
struct CombiningClass {
  char32_t cp;
  unsigned char ccc;
};
struct Decomposition {
  char32_t cp;
  unsigned offset, length;  // into kDecompositionData: the full (recursive) decomposition
};
struct Composition {
  char32_t first, second, composite;
};

// All sorted by code point (kCompositions by (first, second)).
extern const CodeRange kLetters[];
extern const size_t kLetters_size;
extern const CodeRange kNumbers[];
extern const size_t kNumbers_size;
extern const CaseMapping kLowercase[];
extern const size_t kLowercase_size;
extern const CombiningClass kCombiningClasses[];
extern const size_t kCombiningClasses_size;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositions_size;
extern const char32_t kDecompositionData[];
extern const Composition kCompositions[];
extern const size_t kCompositions_size;

}  // namespace tables
}  // namespace vgen::text
