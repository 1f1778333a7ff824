#include "text/prompt_clean.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "text/unicode.h"

namespace vgen {
namespace {

struct Entity {
  std::string_view name;
  char32_t code_point;
  bool legacy;  // also recognised without the trailing ';'
};

// html.entities.html5 restricted to the HTML 4 names and &apos;, sorted by name.
constexpr Entity kEntities[] = {
    {"AElig", 0xC6, true},      {"AMP", 0x26, true},       {"Aacute", 0xC1, true},     {"Acirc", 0xC2, true},
    {"Agrave", 0xC0, true},     {"Alpha", 0x391, false},   {"Aring", 0xC5, true},      {"Atilde", 0xC3, true},
    {"Auml", 0xC4, true},       {"Beta", 0x392, false},    {"COPY", 0xA9, true},       {"Ccedil", 0xC7, true},
    {"Chi", 0x3A7, false},      {"Dagger", 0x2021, false}, {"Delta", 0x394, false},    {"ETH", 0xD0, true},
    {"Eacute", 0xC9, true},     {"Ecirc", 0xCA, true},     {"Egrave", 0xC8, true},     {"Epsilon", 0x395, false},
    {"Eta", 0x397, false},      {"Euml", 0xCB, true},      {"GT", 0x3E, true},         {"Gamma", 0x393, false},
    {"Iacute", 0xCD, true},     {"Icirc", 0xCE, true},     {"Igrave", 0xCC, true},     {"Iota", 0x399, false},
    {"Iuml", 0xCF, true},       {"Kappa", 0x39A, false},   {"LT", 0x3C, true},         {"Lambda", 0x39B, false},
    {"Mu", 0x39C, false},       {"Ntilde", 0xD1, true},    {"Nu", 0x39D, false},       {"OElig", 0x152, false},
    {"Oacute", 0xD3, true},     {"Ocirc", 0xD4, true},     {"Ograve", 0xD2, true},     {"Omega", 0x3A9, false},
    {"Omicron", 0x39F, false},  {"Oslash", 0xD8, true},    {"Otilde", 0xD5, true},     {"Ouml", 0xD6, true},
    {"Phi", 0x3A6, false},      {"Pi", 0x3A0, false},      {"Prime", 0x2033, false},   {"Psi", 0x3A8, false},
    {"QUOT", 0x22, true},       {"REG", 0xAE, true},       {"Rho", 0x3A1, false},      {"Scaron", 0x160, false},
    {"Sigma", 0x3A3, false},    {"THORN", 0xDE, true},     {"Tau", 0x3A4, false},      {"Theta", 0x398, false},
    {"Uacute", 0xDA, true},     {"Ucirc", 0xDB, true},     {"Ugrave", 0xD9, true},     {"Upsilon", 0x3A5, false},
    {"Uuml", 0xDC, true},       {"Xi", 0x39E, false},      {"Yacute", 0xDD, true},     {"Yuml", 0x178, false},
    {"Zeta", 0x396, false},     {"aacute", 0xE1, true},    {"acirc", 0xE2, true},      {"acute", 0xB4, true},
    {"aelig", 0xE6, true},      {"agrave", 0xE0, true},    {"alefsym", 0x2135, false}, {"alpha", 0x3B1, false},
    {"amp", 0x26, true},        {"and", 0x2227, false},    {"ang", 0x2220, false},     {"apos", 0x27, false},
    {"aring", 0xE5, true},      {"asymp", 0x2248, false},  {"atilde", 0xE3, true},     {"auml", 0xE4, true},
    {"bdquo", 0x201E, false},   {"beta", 0x3B2, false},    {"brvbar", 0xA6, true},     {"bull", 0x2022, false},
    {"cap", 0x2229, false},     {"ccedil", 0xE7, true},    {"cedil", 0xB8, true},      {"cent", 0xA2, true},
    {"chi", 0x3C7, false},      {"circ", 0x2C6, false},    {"clubs", 0x2663, false},   {"cong", 0x2245, false},
    {"copy", 0xA9, true},       {"crarr", 0x21B5, false},  {"cup", 0x222A, false},     {"curren", 0xA4, true},
    {"dArr", 0x21D3, false},    {"dagger", 0x2020, false}, {"darr", 0x2193, false},    {"deg", 0xB0, true},
    {"delta", 0x3B4, false},    {"diams", 0x2666, false},  {"divide", 0xF7, true},     {"eacute", 0xE9, true},
    {"ecirc", 0xEA, true},      {"egrave", 0xE8, true},    {"empty", 0x2205, false},   {"emsp", 0x2003, false},
    {"ensp", 0x2002, false},    {"epsilon", 0x3B5, false}, {"equiv", 0x2261, false},   {"eta", 0x3B7, false},
    {"eth", 0xF0, true},        {"euml", 0xEB, true},      {"euro", 0x20AC, false},    {"exist", 0x2203, false},
    {"fnof", 0x192, false},     {"forall", 0x2200, false}, {"frac12", 0xBD, true},     {"frac14", 0xBC, true},
    {"frac34", 0xBE, true},     {"frasl", 0x2044, false},  {"gamma", 0x3B3, false},    {"ge", 0x2265, false},
    {"gt", 0x3E, true},         {"hArr", 0x21D4, false},   {"harr", 0x2194, false},    {"hearts", 0x2665, false},
    {"hellip", 0x2026, false},  {"iacute", 0xED, true},    {"icirc", 0xEE, true},      {"iexcl", 0xA1, true},
    {"igrave", 0xEC, true},     {"image", 0x2111, false},  {"infin", 0x221E, false},   {"int", 0x222B, false},
    {"iota", 0x3B9, false},     {"iquest", 0xBF, true},    {"isin", 0x2208, false},    {"iuml", 0xEF, true},
    {"kappa", 0x3BA, false},    {"lArr", 0x21D0, false},   {"lambda", 0x3BB, false},   {"lang", 0x2329, false},
    {"laquo", 0xAB, true},      {"larr", 0x2190, false},   {"lceil", 0x2308, false},   {"ldquo", 0x201C, false},
    {"le", 0x2264, false},      {"lfloor", 0x230A, false}, {"lowast", 0x2217, false},  {"loz", 0x25CA, false},
    {"lrm", 0x200E, false},     {"lsaquo", 0x2039, false}, {"lsquo", 0x2018, false},   {"lt", 0x3C, true},
    {"macr", 0xAF, true},       {"mdash", 0x2014, false},  {"micro", 0xB5, true},      {"middot", 0xB7, true},
    {"minus", 0x2212, false},   {"mu", 0x3BC, false},      {"nabla", 0x2207, false},   {"nbsp", 0xA0, true},
    {"ndash", 0x2013, false},   {"ne", 0x2260, false},     {"ni", 0x220B, false},      {"not", 0xAC, true},
    {"notin", 0x2209, false},   {"nsub", 0x2284, false},   {"ntilde", 0xF1, true},     {"nu", 0x3BD, false},
    {"oacute", 0xF3, true},     {"ocirc", 0xF4, true},     {"oelig", 0x153, false},    {"ograve", 0xF2, true},
    {"oline", 0x203E, false},   {"omega", 0x3C9, false},   {"omicron", 0x3BF, false},  {"oplus", 0x2295, false},
    {"or", 0x2228, false},      {"ordf", 0xAA, true},      {"ordm", 0xBA, true},       {"oslash", 0xF8, true},
    {"otilde", 0xF5, true},     {"otimes", 0x2297, false}, {"ouml", 0xF6, true},       {"para", 0xB6, true},
    {"part", 0x2202, false},    {"permil", 0x2030, false}, {"perp", 0x22A5, false},    {"phi", 0x3C6, false},
    {"pi", 0x3C0, false},       {"piv", 0x3D6, false},     {"plusmn", 0xB1, true},     {"pound", 0xA3, true},
    {"prime", 0x2032, false},   {"prod", 0x220F, false},   {"prop", 0x221D, false},    {"psi", 0x3C8, false},
    {"quot", 0x22, true},       {"rArr", 0x21D2, false},   {"radic", 0x221A, false},   {"rang", 0x232A, false},
    {"raquo", 0xBB, true},      {"rarr", 0x2192, false},   {"rceil", 0x2309, false},   {"rdquo", 0x201D, false},
    {"real", 0x211C, false},    {"reg", 0xAE, true},       {"rfloor", 0x230B, false},  {"rho", 0x3C1, false},
    {"rlm", 0x200F, false},     {"rsaquo", 0x203A, false}, {"rsquo", 0x2019, false},   {"sbquo", 0x201A, false},
    {"scaron", 0x161, false},   {"sdot", 0x22C5, false},   {"sect", 0xA7, true},       {"shy", 0xAD, true},
    {"sigma", 0x3C3, false},    {"sigmaf", 0x3C2, false},  {"sim", 0x223C, false},     {"spades", 0x2660, false},
    {"sub", 0x2282, false},     {"sube", 0x2286, false},   {"sum", 0x2211, false},     {"sup", 0x2283, false},
    {"sup1", 0xB9, true},       {"sup2", 0xB2, true},      {"sup3", 0xB3, true},       {"supe", 0x2287, false},
    {"szlig", 0xDF, true},      {"tau", 0x3C4, false},     {"there4", 0x2234, false},  {"theta", 0x3B8, false},
    {"thetasym", 0x3D1, false}, {"thinsp", 0x2009, false}, {"thorn", 0xFE, true},      {"tilde", 0x2DC, false},
    {"times", 0xD7, true},      {"trade", 0x2122, false},  {"uArr", 0x21D1, false},    {"uacute", 0xFA, true},
    {"uarr", 0x2191, false},    {"ucirc", 0xFB, true},     {"ugrave", 0xF9, true},     {"uml", 0xA8, true},
    {"upsih", 0x3D2, false},    {"upsilon", 0x3C5, false}, {"uuml", 0xFC, true},       {"weierp", 0x2118, false},
    {"xi", 0x3BE, false},       {"yacute", 0xFD, true},    {"yen", 0xA5, true},        {"yuml", 0xFF, true},
    {"zeta", 0x3B6, false},     {"zwj", 0x200D, false},    {"zwnj", 0x200C, false},
};

const Entity* find_entity(std::string_view name) {
  const Entity* it = std::lower_bound(std::begin(kEntities), std::end(kEntities), name,
                                      [](const Entity& e, std::string_view n) { return e.name < n; });
  return it != std::end(kEntities) && it->name == name ? it : nullptr;
}

// html._invalid_charrefs: C1 controls read as Windows-1252, NUL, CR.
char32_t windows1252(char32_t num) {
  static constexpr char32_t kC1[32] = {0x20AC, 0x81,   0x201A, 0x192,  0x201E, 0x2026, 0x2020, 0x2021,
                                       0x2C6,  0x2030, 0x160,  0x2039, 0x152,  0x8D,   0x17D,  0x8F,
                                       0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                       0x2DC,  0x2122, 0x161,  0x203A, 0x153,  0x9D,   0x17E,  0x178};
  if (num == 0) return 0xFFFD;
  if (num >= 0x80 && num <= 0x9F) return kC1[num - 0x80];
  return num;
}

// html._invalid_codepoints: replaced by nothing.
bool dropped_code_point(char32_t num) {
  return (num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || (num >= 0x7F && num <= 0x9F) ||
         (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE;
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_dec(char c) { return c >= '0' && c <= '9'; }

// A numeric reference "&#..." at text[pos]; appends its replacement and returns the bytes it
// spans, or 0 when there are no digits (then "&#" stays as written).
size_t numeric_reference(std::string_view text, size_t pos, std::string& out) {
  size_t i = pos + 2;
  const bool hex = i < text.size() && (text[i] == 'x' || text[i] == 'X');
  if (hex) ++i;
  const size_t digits_begin = i;
  uint64_t num = 0;
  while (i < text.size() && (hex ? is_hex(text[i]) : is_dec(text[i]))) {
    const char c = text[i++];
    const uint64_t digit = is_dec(c) ? c - '0' : (c | 0x20) - 'a' + 10;
    num = std::min<uint64_t>(num * (hex ? 16 : 10) + digit, 0x110000);  // saturate: all above map to U+FFFD
  }
  if (i == digits_begin) return 0;
  if (i < text.size() && text[i] == ';') ++i;
  const auto cp = static_cast<char32_t>(num);
  if (cp == 0 || cp == 0xD || (cp >= 0x80 && cp <= 0x9F)) {
    text::append_utf8(out, windows1252(cp));
  } else if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
    text::append_utf8(out, 0xFFFD);
  } else if (!dropped_code_point(cp)) {
    text::append_utf8(out, cp);
  }
  return i - pos;
}

// A named reference at text[pos] ('&'): html.unescape takes up to 32 code points other than
// \t \n \f space < & # ; and an optional ';', tries the whole name, then its longest prefix
// of at least 2 characters that is a legacy name.
size_t named_reference(std::string_view text, size_t pos, std::string& out) {
  size_t end = pos + 1;
  int chars = 0;
  char32_t cp;
  while (end < text.size() && chars < 32) {
    const size_t len = text::decode_utf8(text, end, &cp);
    if (len == 0) break;
    if (cp == '\t' || cp == '\n' || cp == '\f' || cp == ' ' || cp == '<' || cp == '&' || cp == '#' || cp == ';') break;
    end += len;
    ++chars;
  }
  if (chars == 0) return 0;
  const std::string_view name = text.substr(pos + 1, end - pos - 1);
  const bool semicolon = end < text.size() && text[end] == ';';
  if (const Entity* e = find_entity(name); e && (semicolon || e->legacy)) {
    text::append_utf8(out, e->code_point);
    return end - pos + (semicolon ? 1 : 0);
  }
  // Legacy prefixes: every legacy name is ASCII, so byte prefixes are character prefixes.
  for (size_t n = name.size() - (semicolon ? 0 : 1); n >= 2; --n) {
    const Entity* e = find_entity(name.substr(0, n));
    if (e && e->legacy) {
      text::append_utf8(out, e->code_point);
      return n + 1;  // the rest of the name (and ';') is copied as written
    }
  }
  return 0;
}

// Python's str.strip() with no argument.
std::string_view strip(std::string_view s) {
  char32_t cp;
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t len = text::decode_utf8(s, begin, &cp);
    if (!text::is_python_space(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    text::decode_utf8(s, start, &cp);
    if (!text::is_python_space(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

}  // namespace

std::string html_unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (text[pos] == '&') {
      const bool numeric = pos + 1 < text.size() && text[pos + 1] == '#';
      const size_t used = numeric ? numeric_reference(text, pos, out) : named_reference(text, pos, out);
      if (used > 0) {
        pos += used;
        continue;
      }
    }
    out += text[pos++];
  }
  return out;
}

std::string wan_prompt_clean(const std::string& text) {
  text::check_utf8(text, "prompt");
  const std::string unescaped = html_unescape(html_unescape(text));
  const std::string_view basic = strip(unescaped);
  // re.sub(r"\s+", " ", text) with the `regex` module: \s is Unicode White_Space.
  std::string collapsed;
  collapsed.reserve(basic.size());
  char32_t cp;
  bool in_space = false;
  for (size_t pos = 0; pos < basic.size();) {
    const size_t len = text::decode_utf8(basic, pos, &cp);
    if (text::is_unicode_whitespace(cp)) {
      if (!in_space) collapsed += ' ';
      in_space = true;
    } else {
      collapsed.append(basic.substr(pos, len));
      in_space = false;
    }
    pos += len;
  }
  return std::string(strip(collapsed));
}

}  // namespace vgen
