// NFC, lowercase and the letter / number classes over the generated tables (unicode_tables.cpp).
#include <algorithm>

#include "text/unicode_tables.h"

namespace vgen::text {
namespace {

using namespace tables;

bool in_ranges(const CodeRange* ranges, size_t n, char32_t cp) {
  const CodeRange* end = ranges + n;
  const CodeRange* it = std::upper_bound(ranges, end, cp, [](char32_t c, const CodeRange& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

// Hangul syllable arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

unsigned combining_class(char32_t cp) {
  const CombiningClass* end = kCombiningClasses + kCombiningClasses_size;
  const CombiningClass* it =
      std::lower_bound(kCombiningClasses, end, cp, [](const CombiningClass& c, char32_t x) { return c.cp < x; });
  return it != end && it->cp == cp ? it->ccc : 0;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositions_size;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, char32_t x) { return d.cp < x; });
  if (it != end && it->cp == cp)
    out.append(kDecompositionData + it->offset, it->length);
  else
    out.push_back(cp);
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompositions + kCompositions_size;
  const Composition* it = std::lower_bound(kCompositions, end, std::make_pair(a, b), [](const Composition& c, auto key) {
    return c.first < key.first || (c.first == key.first && c.second < key.second);
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

bool is_letter(char32_t cp) { return in_ranges(kLetters, kLetters_size, cp); }
bool is_number(char32_t cp) { return in_ranges(kNumbers, kNumbers_size, cp); }

void append_lowercase(std::u32string& out, char32_t cp) {
  const CaseMapping* end = kLowercase + kLowercase_size;
  const CaseMapping* it =
      std::lower_bound(kLowercase, end, cp, [](const CaseMapping& m, char32_t x) { return m.cp < x; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  for (char32_t c : it->to)
    if (c != 0) out.push_back(c);
}

std::u32string nfc(const std::u32string& text) {
  // 1. Full canonical decomposition.
  std::u32string d;
  d.reserve(text.size());
  for (char32_t cp : text) decompose(cp, d);
  // 2. Canonical ordering: each run of non-starters stably sorted by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // 3. Canonical composition: each character joins the last starter unless blocked, that is,
  // unless a starter or a mark of the same or a higher class stands between them.
  std::u32string out;
  out.reserve(d.size());
  size_t starter = std::u32string::npos;
  unsigned last_class = 0;
  for (char32_t cp : d) {
    const unsigned cc = combining_class(cp);
    if (starter != std::u32string::npos) {
      const bool adjacent = starter + 1 == out.size();
      const bool blocked = !adjacent && (last_class == 0 || last_class >= cc);
      if (!blocked) {
        if (const char32_t c = compose(out[starter], cp)) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = out.size();
      last_class = 0;
    } else {
      last_class = cc;
    }
    out.push_back(cp);
  }
  return out;
}

}  // namespace vgen::text
