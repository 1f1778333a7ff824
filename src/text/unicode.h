// UTF-8 and the few Unicode properties the tokenizer and prompt cleaning need, without ICU.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vgen::text {

// Decodes the code point starting at s[pos] (strict UTF-8: no overlongs, surrogates or values
// above U+10FFFF). Returns its byte length, or 0 when the bytes there are malformed.
size_t decode_utf8(std::string_view s, size_t pos, char32_t* cp);
void append_utf8(std::string& out, char32_t cp);
// Throws vgen::Error "<what>: not valid UTF-8 at byte N" when s is malformed.
void check_utf8(std::string_view s, std::string_view what);

// Unicode White_Space: Rust's char::is_whitespace, the `regex` module's \s.
bool is_unicode_whitespace(char32_t cp);
// Python's str.isspace() (used by str.strip()): White_Space plus U+001C..U+001F.
bool is_python_space(char32_t cp);

// Byte length of the grapheme cluster starting at pos in valid UTF-8. Implements the UAX #29
// rules that can join code points into a cluster shorter than 6 bytes (CR LF, controls,
// Prepend, Extend / ZWJ / SpacingMark), which is all that tokenizers' Precompiled
// normalizer needs: Hangul, regional-indicator and emoji-ZWJ joins span 6 bytes or more, and
// the normalizer handles such clusters code point by code point anyway.
size_t grapheme_length(std::string_view s, size_t pos);

}  // namespace vgen::text
