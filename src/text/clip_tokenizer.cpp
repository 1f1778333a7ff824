#include "text/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <unordered_map>

#include "core/error.h"
#include "io/json.h"
#include "text/unicode.h"
#include "text/unicode_tables.h"

namespace vgen {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kEndOfWord = "</w>";
constexpr int64_t kDefaultMaxLength = 77;

// An added token: split out of the text before the model sees it. `normalized` ones are matched
// in the normalized text, the others in the raw text (tokenizers' AddedVocabulary).
struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool lstrip = false, rstrip = false;
  bool normalized = false;
  bool special = true;
};

// GPT-2's byte <-> printable code point table (ByteLevel pre-tokenizer and decoder).
struct ByteTable {
  std::array<std::string, 256> encode;        // byte -> UTF-8 of its code point
  std::unordered_map<char32_t, uint8_t> decode;

  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      text::append_utf8(encode[static_cast<size_t>(b)], cp);
      decode.emplace(cp, static_cast<uint8_t>(b));
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  char32_t cp;
  for (size_t pos = 0; pos < s.size();) {
    const size_t len = text::decode_utf8(s, pos, &cp);
    VGEN_CHECK(len > 0, "CLIPTokenizer: invalid UTF-8 at byte {}", pos);
    out.push_back(cp);
    pos += len;
  }
  return out;
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  for (char32_t cp : s) text::append_utf8(out, cp);
  return out;
}

// tokenizers' CLIP normalizer: NFC, Replace(\s+ -> " "), Lowercase.
std::u32string normalize(std::string_view raw) {
  const std::u32string composed = text::nfc(to_u32(raw));
  std::u32string out;
  out.reserve(composed.size());
  bool in_space = false;
  for (char32_t cp : composed) {
    if (text::is_unicode_whitespace(cp)) {
      if (!in_space) out.push_back(U' ');
      in_space = true;
      continue;
    }
    in_space = false;
    text::append_lowercase(out, cp);
  }
  return out;
}

// UTF-8 decoding as Rust's String::from_utf8_lossy: each maximal
// ill-formed subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  for (size_t pos = 0; pos < bytes.size();) {
    char32_t cp;
    if (const size_t len = text::decode_utf8(bytes, pos, &cp)) {
      out.append(bytes.substr(pos, len));
      pos += len;
      continue;
    }
    // The longest prefix of a well-formed sequence starting here (at least one byte).
    const auto b0 = static_cast<unsigned char>(bytes[pos]);
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    }
    size_t len = 1;
    for (size_t i = 0; i < need && pos + len < bytes.size(); ++i) {
      const auto b = static_cast<unsigned char>(bytes[pos + len]);
      if (b < (i == 0 ? lo : 0x80) || b > (i == 0 ? hi : 0xBF)) break;
      ++len;
    }
    out += "\xEF\xBF\xBD";
    pos += len;
  }
  return out;
}

bool is_other(char32_t cp) { return !text::is_unicode_whitespace(cp) && !text::is_letter(cp) && !text::is_number(cp); }

// CLIPTokenizer's pre-tokenizer on normalized text: the matches of
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (leftmost-first alternation; what lies between matches is whitespace and is dropped), each
// then split by ByteLevel's GPT-2 regex, which only cuts the two special-token literals (into
// "<|", the letters, "|>"): every other match is already one GPT-2 piece.
std::vector<std::u32string> pre_tokenize(const std::u32string& s) {
  static const std::u32string kLiterals[] = {U"<|startoftext|>", U"<|endoftext|>"};
  static const std::u32string kContractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
  std::vector<std::u32string> pieces;
  for (size_t i = 0; i < s.size();) {
    const char32_t c = s[i];
    if (text::is_unicode_whitespace(c)) {
      ++i;
      continue;
    }
    const auto starts_with = [&](const std::u32string& lit) { return s.compare(i, lit.size(), lit) == 0; };
    bool done = false;
    for (const std::u32string& lit : kLiterals) {
      if (!starts_with(lit)) continue;
      pieces.push_back(lit.substr(0, 2));
      pieces.push_back(lit.substr(2, lit.size() - 4));
      pieces.push_back(lit.substr(lit.size() - 2));
      i += lit.size();
      done = true;
      break;
    }
    if (done) continue;
    for (const std::u32string& lit : kContractions) {
      if (!starts_with(lit)) continue;
      pieces.push_back(lit);
      i += lit.size();
      done = true;
      break;
    }
    if (done) continue;
    size_t j = i + 1;
    if (text::is_letter(c)) {
      while (j < s.size() && text::is_letter(s[j])) ++j;
    } else if (!text::is_number(c)) {
      while (j < s.size() && is_other(s[j])) ++j;
    }
    pieces.push_back(s.substr(i, j - i));
    i = j;
  }
  return pieces;
}

}  // namespace

struct CLIPTokenizer::Impl {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_token;  // by id (vocabulary and added tokens)
  // Merge rank of "left right" (the pair's two symbols joined by a space: neither has one).
  std::unordered_map<std::string, int64_t> merge_rank;
  std::vector<AddedToken> added;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  int64_t model_max_length = kDefaultMaxLength;
  std::string where;  // the files, for errors

  int64_t token_to_id(const std::string& token) const {
    for (const AddedToken& t : added)
      if (t.content == token) return t.id;
    const auto it = vocab.find(token);
    return it == vocab.end() ? -1 : it->second;
  }

  // Byte-level BPE of one pre-token, "</w>" on its last symbol; ids appended.
  void bpe(const std::u32string& piece, std::vector<int64_t>& ids) const {
    const ByteTable& bytes = byte_table();
    std::vector<std::string> symbols;
    for (const unsigned char b : to_utf8(piece)) symbols.push_back(bytes.encode[b]);
    if (symbols.empty()) return;
    symbols.back() += kEndOfWord;
    // Merge the lowest-ranked adjacent pair (the leftmost among equals) until none is left;
    // rank[i] is that of (symbols[i], symbols[i + 1]), refreshed beside each merge.
    const auto pair_rank = [&](size_t i) {
      const auto it = merge_rank.find(symbols[i] + " " + symbols[i + 1]);
      return it == merge_rank.end() ? INT64_MAX : it->second;
    };
    std::vector<int64_t> rank(symbols.size() - 1);
    for (size_t i = 0; i < rank.size(); ++i) rank[i] = pair_rank(i);
    while (!rank.empty()) {
      const size_t at = static_cast<size_t>(std::min_element(rank.begin(), rank.end()) - rank.begin());
      if (rank[at] == INT64_MAX) break;
      symbols[at] += symbols[at + 1];
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(at) + 1);
      rank.erase(rank.begin() + static_cast<std::ptrdiff_t>(at));
      if (at < rank.size()) rank[at] = pair_rank(at);
      if (at > 0) rank[at - 1] = pair_rank(at - 1);
    }
    for (const std::string& s : symbols) {
      const auto it = vocab.find(s);
      ids.push_back(it == vocab.end() ? unk_id : it->second);
    }
  }

  // Splits `text` on the added tokens with normalized == `normalized` (leftmost, then
  // longest; lstrip / rstrip take the whitespace beside it), calling on_text for the pieces in
  // between and on_token for the tokens.
  template <typename OnText, typename OnToken>
  void split_added(std::u32string_view text, bool normalized, OnText on_text, OnToken on_token) const {
    std::vector<std::pair<std::u32string, const AddedToken*>> tokens;
    for (const AddedToken& t : added)
      if (t.normalized == normalized) tokens.emplace_back(to_u32(t.content), &t);
    std::stable_sort(tokens.begin(), tokens.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    size_t begin = 0;
    for (size_t pos = 0; pos < text.size(); ++pos) {
      const AddedToken* match = nullptr;
      size_t length = 0;
      for (const auto& [content, token] : tokens) {
        if (!content.empty() && text.compare(pos, content.size(), content) == 0) {
          match = token;
          length = content.size();
          break;
        }
      }
      if (!match) continue;
      size_t before = pos, after = pos + length;
      if (match->lstrip)
        while (before > begin && text::is_unicode_whitespace(text[before - 1])) --before;
      if (match->rstrip)
        while (after < text.size() && text::is_unicode_whitespace(text[after])) ++after;
      if (before > begin) on_text(text.substr(begin, before - begin));
      on_token(*match);
      begin = after;
      pos = after - 1;
    }
    if (begin < text.size()) on_text(text.substr(begin));
  }

  // Ids of `text` without bos / eos.
  std::vector<int64_t> encode_text(const std::string& text) const {
    std::vector<int64_t> ids;
    const auto on_token = [&](const AddedToken& t) { ids.push_back(t.id); };
    split_added(to_u32(text), false, [&](std::u32string_view raw) {
      const std::u32string normalized = normalize(to_utf8(raw));
      split_added(normalized, true, [&](std::u32string_view segment) {
        for (const std::u32string& piece : pre_tokenize(std::u32string(segment))) bpe(piece, ids);
      }, on_token);
    }, on_token);
    return ids;
  }

  void add_token(AddedToken token) {
    if (token.content.empty()) return;
    for (AddedToken& t : added) {
      if (t.content == token.content) {  // a later source (tokenizer_config.json) refines the flags
        if (token.id >= 0 && token.id != t.id) fail("{}: added token '{}' has ids {} and {}", where, t.content, t.id, token.id);
        token.id = t.id;
        t = token;
        return;
      }
    }
    if (token.id < 0) {
      const auto it = vocab.find(token.content);
      token.id = it != vocab.end() ? it->second : static_cast<int64_t>(id_to_token.size());
    }
    if (token.id >= static_cast<int64_t>(id_to_token.size())) id_to_token.resize(static_cast<size_t>(token.id) + 1);
    id_to_token[static_cast<size_t>(token.id)] = token.content;
    added.push_back(std::move(token));
  }
};

namespace {

// "<|endoftext|>" or {"content": "<|endoftext|>", ...} (tokenizer_config.json, special_tokens_map.json).
std::optional<AddedToken> token_entry(const Json& value, const std::string& where, bool special) {
  AddedToken t;
  t.special = special;
  if (value.is_string()) {
    t.content = value.get<std::string>();
  } else if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    t.content = value["content"].get<std::string>();
    t.lstrip = json_get<bool>(value, "lstrip", false, where);
    t.rstrip = json_get<bool>(value, "rstrip", false, where);
    t.special = json_get<bool>(value, "special", special, where);
    // tokenizers: a token is normalized unless said otherwise, special ones not by default.
    t.normalized = json_get<bool>(value, "normalized", !t.special, where);
  } else if (value.is_null()) {
    return std::nullopt;
  } else {
    fail("{}: token {} is neither a string nor an object with 'content'", where, value.dump());
  }
  if (t.content.empty()) return std::nullopt;
  return t;
}

}  // namespace

CLIPTokenizer::CLIPTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CLIPTokenizer::CLIPTokenizer(CLIPTokenizer&&) noexcept = default;
CLIPTokenizer& CLIPTokenizer::operator=(CLIPTokenizer&&) noexcept = default;
CLIPTokenizer::~CLIPTokenizer() = default;

CLIPTokenizer CLIPTokenizer::from_pretrained(const std::string& dir) {
  if (!fs::is_directory(dir)) fail("{}: tokenizer folder not found", dir);
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  auto impl = std::make_unique<Impl>();

  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> file_added;
  const auto read_vocab = [&](const Json& v, const std::string& where) {
    if (!v.is_object() || v.empty()) fail("{}: the vocabulary must be a non-empty {{token: id}} object", where);
    for (const auto& [token, id] : v.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        fail("{}: vocabulary entry '{}' has id {}, expected a non-negative integer", where, token, id.dump());
      const auto i = id.get<int64_t>();
      if (i >= static_cast<int64_t>(impl->id_to_token.size())) impl->id_to_token.resize(static_cast<size_t>(i) + 1);
      impl->id_to_token[static_cast<size_t>(i)] = token;
      impl->vocab.emplace(token, i);
    }
  };
  if (fs::exists(json_path)) {
    // transformers 5 takes the vocabulary, the merges and the added tokens from tokenizer.json;
    // the normalizer, pre-tokenizer and post-processor are CLIPTokenizer's own.
    impl->where = json_path;
    const Json j = read_json_file(json_path);
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
      fail("{}: missing or malformed 'model'", json_path);
    const Json& model = j["model"];
    const std::string type = json_get<std::string>(model, "type", "BPE", json_path);
    if (type != "BPE") fail("{}: model type '{}' is not supported (CLIP's tokenizer is BPE)", json_path, type);
    if (!model.contains("vocab")) fail("{}: model.vocab is missing", json_path);
    read_vocab(model["vocab"], json_path + ": model.vocab");
    if (model.contains("merges") && !model["merges"].is_null()) {
      if (!model["merges"].is_array()) fail("{}: model.merges must be a list", json_path);
      for (size_t i = 0; i < model["merges"].size(); ++i) {
        const Json& m = model["merges"][i];
        if (m.is_string()) {
          const std::string s = m.get<std::string>();
          const size_t space = s.find(' ');
          if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
            fail("{}: model.merges[{}] \"{}\" is not two symbols separated by one space", json_path, i, s);
          merges.emplace_back(s.substr(0, space), s.substr(space + 1));
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
          merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
          fail("{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"] ({})", json_path, i, m.dump());
        }
      }
    }
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) fail("{}: 'added_tokens' must be a list", json_path);
      for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
        const Json& entry = j["added_tokens"][i];
        auto t = token_entry(entry, fmt::format("{}: added_tokens[{}]", json_path, i), true);
        if (!t) continue;
        t->id = entry.contains("id") && entry["id"].is_number_integer() ? entry["id"].get<int64_t>() : -1;
        file_added.push_back(*t);
      }
    }
  } else {
    if (!fs::exists(vocab_path) || !fs::exists(merges_path))
      fail("{}: no tokenizer model (expected tokenizer.json, or vocab.json and merges.txt)", dir);
    impl->where = vocab_path;
    read_vocab(read_json_file(vocab_path), vocab_path);
    std::ifstream in(merges_path);
    if (!in) fail("{}: cannot open", merges_path);
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        fail("{}: line {} \"{}\" is not two symbols separated by one space", merges_path, n, line);
      merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    }
  }
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& [a, b] = merges[i];
    if (!impl->vocab.count(a) || !impl->vocab.count(b) || !impl->vocab.count(a + b))
      fail("{}: merge {} \"{} {}\" uses a symbol outside the vocabulary", impl->where, i, a, b);
    impl->merge_rank.emplace(a + " " + b, static_cast<int64_t>(i));
  }

  // Special tokens: tokenizer_config.json, completed by special_tokens_map.json; added tokens
  // from tokenizer.json, then tokenizer_config.json's added_tokens_decoder.
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
  const Json config = fs::exists(config_path) ? read_json_file(config_path) : Json::object();
  const Json special_map = fs::exists(map_path) ? read_json_file(map_path) : Json::object();
  if (!config.is_object()) fail("{}: expected a JSON object", config_path);
  if (!special_map.is_object()) fail("{}: expected a JSON object", map_path);
  for (const AddedToken& t : file_added) impl->add_token(t);
  if (config.contains("added_tokens_decoder") && !config["added_tokens_decoder"].is_null()) {
    if (!config["added_tokens_decoder"].is_object()) fail("{}: 'added_tokens_decoder' must be an object", config_path);
    for (const auto& [id, value] : config["added_tokens_decoder"].items()) {
      auto t = token_entry(value, fmt::format("{}: added_tokens_decoder.{}", config_path, id), true);
      if (!t) continue;
      try {
        t->id = std::stoll(id);
      } catch (const std::exception&) {
        fail("{}: added_tokens_decoder key '{}' is not an id", config_path, id);
      }
      impl->add_token(*t);
    }
  }
  const auto special_token = [&](const std::string& key, const std::string& fallback) {
    std::optional<AddedToken> t;
    if (config.contains(key)) t = token_entry(config[key], config_path, true);
    if (!t && special_map.contains(key)) t = token_entry(special_map[key], map_path, true);
    if (!t) t = AddedToken{fallback};
    // One already added keeps its flags (the string form says nothing about them).
    const bool added = std::any_of(impl->added.begin(), impl->added.end(),
                                   [&](const AddedToken& a) { return a.content == t->content; });
    if (!added) impl->add_token(*t);
    const int64_t id = impl->token_to_id(t->content);
    if (id < 0) fail("{}: {} '{}' is not in the vocabulary", dir, key, t->content);
    return id;
  };
  impl->bos_id = special_token("bos_token", "<|startoftext|>");
  impl->eos_id = special_token("eos_token", "<|endoftext|>");
  impl->unk_id = special_token("unk_token", "<|endoftext|>");
  impl->pad_id = special_token("pad_token", "<|endoftext|>");
  if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
    const double m = config["model_max_length"].get<double>();
    if (m >= 2 && m < 1e9) impl->model_max_length = static_cast<int64_t>(m);
  }
  return CLIPTokenizer(std::move(impl));
}

std::vector<int64_t> CLIPTokenizer::encode(const std::string& text) const {
  text::check_utf8(text, "tokenizer input");
  std::vector<int64_t> ids{impl_->bos_id};
  for (const int64_t id : impl_->encode_text(text)) ids.push_back(id);
  ids.push_back(impl_->eos_id);
  return ids;
}

std::string CLIPTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const ByteTable& bytes = byte_table();
  std::string joined;
  for (const int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(impl_->id_to_token.size()))
      fail("CLIPTokenizer::decode: id {} is outside the vocabulary ({} ids)", id, impl_->id_to_token.size());
    if (skip_special_tokens) {
      const auto it = std::find_if(impl_->added.begin(), impl_->added.end(),
                                   [&](const AddedToken& t) { return t.id == id && t.special; });
      if (it != impl_->added.end()) continue;
    }
    joined += impl_->id_to_token[static_cast<size_t>(id)];
  }
  // ByteLevel decoder: each code point back to its byte (one outside the table stays as is).
  std::string raw;
  for (const char32_t cp : to_u32(joined)) {
    const auto it = bytes.decode.find(cp);
    if (it != bytes.decode.end()) {
      raw += static_cast<char>(it->second);
    } else {
      text::append_utf8(raw, cp);
    }
  }
  std::string text = utf8_lossy(raw);
  // transformers' wrapper: "</w>" -> " ", then strip.
  for (size_t at = text.find(kEndOfWord); at != std::string::npos; at = text.find(kEndOfWord, at + 1))
    text.replace(at, kEndOfWord.size(), " ");
  std::u32string t = to_u32(text);
  size_t a = 0, b = t.size();
  while (a < b && text::is_python_space(t[a])) ++a;
  while (b > a && text::is_python_space(t[b - 1])) --b;
  return to_utf8(t.substr(a, b - a));
}

TokenizerOutput CLIPTokenizer::operator()(const std::vector<std::string>& texts, int64_t max_length,
                                          const TruncationCallback& on_truncated) const {
  if (max_length < 2) fail("CLIPTokenizer: max_length must be at least 2 (room for bos and eos), got {}", max_length);
  text::OnTruncated removed;
  if (on_truncated)
    removed = [&](size_t index, const std::vector<int64_t>& ids) { on_truncated(index, decode(ids)); };
  return text::pad_and_truncate(
      texts, max_length, [&](const std::string& t) { return impl_->encode_text(t); }, impl_->bos_id, impl_->eos_id,
      impl_->pad_id, removed);
}

int64_t CLIPTokenizer::vocab_size() const {
  // len(tokenizer): the vocabulary plus the added tokens outside it.
  int64_t n = static_cast<int64_t>(impl_->vocab.size());
  for (const AddedToken& t : impl_->added)
    if (!impl_->vocab.count(t.content)) ++n;
  return n;
}
int64_t CLIPTokenizer::bos_token_id() const { return impl_->bos_id; }
int64_t CLIPTokenizer::eos_token_id() const { return impl_->eos_id; }
int64_t CLIPTokenizer::pad_token_id() const { return impl_->pad_id; }
int64_t CLIPTokenizer::unk_token_id() const { return impl_->unk_id; }
int64_t CLIPTokenizer::model_max_length() const { return impl_->model_max_length; }
int64_t CLIPTokenizer::token_to_id(const std::string& token) const { return impl_->token_to_id(token); }

}  // namespace vgen
