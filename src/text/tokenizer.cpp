#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>

#include "core/error.h"
#include "io/json.h"
#include "text/precompiled_charsmap.h"
#include "text/unicode.h"
#include "text/unigram.h"

namespace vgen {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // "▁", U+2581

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool lstrip = false;
  bool rstrip = false;
};

// A special token in tokenizer_config.json / special_tokens_map.json: "<pad>" or {"content": "<pad>", ...}.
std::optional<AddedToken> token_entry(const Json& value, const std::string& where) {
  AddedToken t;
  if (value.is_string()) {
    t.content = value.get<std::string>();
  } else if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    t.content = value["content"].get<std::string>();
    t.lstrip = json_get<bool>(value, "lstrip", false, where);
    t.rstrip = json_get<bool>(value, "rstrip", false, where);
  } else if (value.is_null()) {
    return std::nullopt;
  } else {
    fail("{}: special token {} is neither a string nor an object with 'content'", where, value.dump());
  }
  if (t.content.empty()) return std::nullopt;
  return t;
}

std::string base64_decode(std::string_view text, const std::string& where) {
  std::array<int, 256> value;
  value.fill(-1);
  const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < alphabet.size(); ++i) value[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : text) {
    if (c == '=') break;
    const int v = value[static_cast<unsigned char>(c)];
    if (v < 0) fail("{}: precompiled_charsmap is not valid base64", where);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

bool read_varint(std::string_view s, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; pos < s.size() && shift < 64; shift += 7) {
    const auto byte = static_cast<unsigned char>(s[pos++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

void append_varint(std::string& out, uint64_t value) {
  for (; value >= 0x80; value >>= 7) out += static_cast<char>((value & 0x7F) | 0x80);
  out += static_cast<char>(value);
}

// One field of a protobuf message in wire format.
struct ProtoField {
  uint64_t number = 0;
  uint64_t wire_type = 0;
  std::string_view raw;      // key and value, as stored
  std::string_view payload;  // the bytes of a length-delimited value
};

std::vector<ProtoField> proto_fields(std::string_view message, const std::string& where) {
  std::vector<ProtoField> fields;
  for (size_t pos = 0; pos < message.size();) {
    const size_t begin = pos;
    ProtoField f;
    uint64_t key, value;
    bool ok = read_varint(message, pos, key);
    f.number = key >> 3;
    f.wire_type = key & 7;
    if (ok) {
      switch (f.wire_type) {
        case 0:
          ok = read_varint(message, pos, value);
          break;
        case 1:
        case 5: {
          const size_t size = f.wire_type == 1 ? 8 : 4;
          ok = message.size() - pos >= size;
          pos += size;
          break;
        }
        case 2:
          ok = read_varint(message, pos, value) && value <= message.size() - pos;
          if (ok) {
            f.payload = message.substr(pos, value);
            pos += value;
          }
          break;
        default:
          ok = false;
      }
    }
    if (!ok) fail("{}: cannot load the SentencePiece model (malformed protobuf at byte {})", where, begin);
    f.raw = message.substr(begin, pos - begin);
    fields.push_back(f);
  }
  return fields;
}

// Splits a serialized ModelProto into the model without normalizer_spec (3).precompiled_charsmap
// (2) and that charsmap (empty when absent): the text reaches SentencePiece already normalized
// the way transformers does it, and must not be normalized a second time.
std::string without_charsmap(std::string_view proto, std::string& charsmap, const std::string& where) {
  std::string out;
  for (const ProtoField& f : proto_fields(proto, where)) {
    if (f.number != 3 || f.wire_type != 2) {
      out += f.raw;
      continue;
    }
    std::string spec;
    for (const ProtoField& g : proto_fields(f.payload, where)) {
      if (g.number == 2 && g.wire_type == 2) {
        charsmap.assign(g.payload);
      } else {
        spec += g.raw;
      }
    }
    append_varint(out, (3 << 3) | 2);
    append_varint(out, spec.size());
    out += spec;
  }
  return out;
}

}  // namespace

struct T5Tokenizer::Impl {
  TokenizerSource source = TokenizerSource::Auto;
  std::string where;  // the model file, for error messages

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;  // spiece.model
  std::unique_ptr<text::UnigramModel> unigram;                // tokenizer.json
  std::unique_ptr<text::PrecompiledCharsmap> charsmap;        // absent: no normalization

  int64_t model_size = 0;                             // pieces of the SentencePiece / Unigram model
  std::unordered_map<std::string, int64_t> appended;  // ids >= model_size: sentinels, new added tokens
  std::vector<AddedToken> added;
  std::array<std::vector<size_t>, 256> added_by_first_byte;  // indices into `added`, longest first
  int64_t pad_id = 0, eos_id = 1, unk_id = 2;

  int64_t model_token_to_id(const std::string& token) const {
    if (sp) {
      const int id = sp->PieceToId(token);  // unk_id for unknown pieces
      if (id >= 0 && sp->IdToPiece(id) == token) return id;
    } else if (const int64_t id = unigram->token_to_id(token); id >= 0) {
      return id;
    }
    auto it = appended.find(token);
    return it == appended.end() ? -1 : it->second;
  }

  int64_t vocab_size() const { return model_size + static_cast<int64_t>(appended.size()); }

  // Registers an added token (split out of raw text); one outside the vocabulary gets the next id.
  void add_token(AddedToken token) {
    token.id = model_token_to_id(token.content);
    if (token.id < 0) {
      token.id = vocab_size();
      appended.emplace(token.content, token.id);
    }
    for (AddedToken& t : added) {
      if (t.content == token.content) {
        t.lstrip |= token.lstrip;
        t.rstrip |= token.rstrip;
        return;
      }
    }
    added.push_back(std::move(token));
  }

  void index_added_tokens() {
    for (size_t i = 0; i < added.size(); ++i)
      added_by_first_byte[static_cast<unsigned char>(added[i].content[0])].push_back(i);
    for (auto& bucket : added_by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(),
                       [&](size_t a, size_t b) { return added[a].content.size() > added[b].content.size(); });
    }
  }

  // SentencePiece's ids for one segment, normalized beforehand as transformers does (its
  // per-grapheme reading of the charsmap; SentencePiece's own longest-match normalization is
  // removed at load). Byte pieces (models trained with byte_fallback) become one <unk> per run,
  // as transformers' converted tokenizer has no byte fallback.
  void encode_with_sentencepiece(std::string_view segment, std::vector<int64_t>& ids) const {
    const std::string normalized = charsmap ? charsmap->normalize(segment) : std::string(segment);
    // transformers splits words on any Unicode whitespace, SentencePiece on ' ' only (U+0085
    // survives nmt_nfkc, for one).
    std::string spaced;
    char32_t cp;
    for (size_t pos = 0; pos < normalized.size();) {
      const size_t len = text::decode_utf8(normalized, pos, &cp);
      if (text::is_unicode_whitespace(cp)) {
        spaced += ' ';
      } else {
        spaced.append(normalized, pos, len);
      }
      pos += len;
    }
    std::vector<int> pieces;
    const auto status = sp->Encode(spaced, &pieces);
    if (!status.ok()) fail("{}: SentencePiece failed to encode text ({})", where, status.ToString());
    bool in_bytes = false;
    for (const int id : pieces) {
      const bool byte = sp->IsByte(id);
      if (!byte) {
        ids.push_back(id);
      } else if (!in_bytes) {
        ids.push_back(unk_id);
      }
      in_bytes = byte;
    }
  }

  // Precompiled normalizer, WhitespaceSplit, Metaspace("▁", prepend "always", split), Unigram.
  void encode_with_unigram(std::string_view segment, std::vector<int64_t>& ids) const {
    const std::string normalized = charsmap ? charsmap->normalize(segment) : std::string(segment);
    const std::string_view text = normalized;
    char32_t cp;
    std::string word;
    for (size_t pos = 0; pos < text.size();) {
      size_t len = text::decode_utf8(text, pos, &cp);
      if (text::is_unicode_whitespace(cp)) {
        pos += len;
        continue;
      }
      size_t end = pos;
      while (end < text.size()) {
        len = text::decode_utf8(text, end, &cp);
        if (text::is_unicode_whitespace(cp)) break;
        end += len;
      }
      word.assign(text.substr(pos, end - pos));
      pos = end;
      if (word.compare(0, kMetaspace.size(), kMetaspace) != 0) word.insert(0, kMetaspace);
      // Split before every "▁" (MergedWithNext).
      const std::string_view w = word;
      size_t piece_begin = 0;
      for (size_t at = w.find(kMetaspace, kMetaspace.size()); at != std::string_view::npos;
           at = w.find(kMetaspace, at + kMetaspace.size())) {
        unigram->encode(w.substr(piece_begin, at - piece_begin), ids);
        piece_begin = at;
      }
      unigram->encode(w.substr(piece_begin), ids);
    }
  }

  void encode_segment(std::string_view segment, std::vector<int64_t>& ids) const {
    if (segment.empty()) return;
    if (sp) {
      encode_with_sentencepiece(segment, ids);
    } else {
      encode_with_unigram(segment, ids);
    }
  }

  // Model ids of `text` without </s>: added tokens split out first (leftmost, then longest).
  std::vector<int64_t> encode_text(std::string_view text) const {
    std::vector<int64_t> ids;
    size_t segment_begin = 0;
    for (size_t pos = 0; pos < text.size(); ++pos) {
      const AddedToken* match = nullptr;
      for (const size_t i : added_by_first_byte[static_cast<unsigned char>(text[pos])]) {
        if (text.compare(pos, added[i].content.size(), added[i].content) == 0) {
          match = &added[i];
          break;
        }
      }
      if (!match) continue;
      size_t before = pos, after = pos + match->content.size();
      char32_t cp;
      if (match->lstrip) {
        while (before > segment_begin) {
          size_t start = before - 1;
          while (start > segment_begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
          text::decode_utf8(text, start, &cp);
          if (!text::is_unicode_whitespace(cp)) break;
          before = start;
        }
      }
      if (match->rstrip) {
        while (after < text.size()) {
          const size_t len = text::decode_utf8(text, after, &cp);
          if (!text::is_unicode_whitespace(cp)) break;
          after += len;
        }
      }
      encode_segment(text.substr(segment_begin, before - segment_begin), ids);
      ids.push_back(match->id);
      segment_begin = after;
      pos = after - 1;
    }
    encode_segment(text.substr(segment_begin), ids);
    return ids;
  }
};

T5Tokenizer::T5Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
T5Tokenizer::T5Tokenizer(T5Tokenizer&&) noexcept = default;
T5Tokenizer& T5Tokenizer::operator=(T5Tokenizer&&) noexcept = default;
T5Tokenizer::~T5Tokenizer() = default;

T5Tokenizer T5Tokenizer::from_pretrained(const std::string& dir, TokenizerSource source) {
  if (!fs::is_directory(dir)) fail("{}: tokenizer folder not found", dir);
  const std::string spiece_path = (fs::path(dir) / "spiece.model").string();
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const bool has_spiece = fs::exists(spiece_path), has_json = fs::exists(json_path);
  if (source == TokenizerSource::Auto) {
    if (!has_spiece && !has_json) fail("{}: no tokenizer model (expected spiece.model or tokenizer.json)", dir);
    source = has_spiece ? TokenizerSource::SentencePiece : TokenizerSource::TokenizerJson;
  }
  if (source == TokenizerSource::SentencePiece && !has_spiece) fail("{}: file not found", spiece_path);
  if (source == TokenizerSource::TokenizerJson && !has_json) fail("{}: file not found", json_path);

  // Special tokens: tokenizer_config.json, completed by special_tokens_map.json.
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
  const Json config = fs::exists(config_path) ? read_json_file(config_path) : Json::object();
  const Json special_map = fs::exists(map_path) ? read_json_file(map_path) : Json::object();
  if (!config.is_object()) fail("{}: expected a JSON object", config_path);
  if (!special_map.is_object()) fail("{}: expected a JSON object", map_path);
  const auto special_token = [&](const std::string& key, const std::string& fallback) {
    std::optional<AddedToken> t;
    if (config.contains(key)) t = token_entry(config[key], config_path);
    if (!t && special_map.contains(key)) t = token_entry(special_map[key], map_path);
    if (!t) t = AddedToken{fallback};
    return *t;
  };

  auto impl = std::make_unique<Impl>();
  impl->source = source;
  std::vector<AddedToken> file_added;  // tokenizer.json's added_tokens
  if (source == TokenizerSource::SentencePiece) {
    impl->where = spiece_path;
    std::ifstream in(spiece_path, std::ios::binary);
    if (!in) fail("{}: cannot open", spiece_path);
    const std::string proto((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string charsmap;
    const std::string model = without_charsmap(proto, charsmap, spiece_path);
    impl->sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = impl->sp->LoadFromSerializedProto(model);
    if (!status.ok()) fail("{}: cannot load the SentencePiece model ({})", spiece_path, status.ToString());
    if (!charsmap.empty()) impl->charsmap = std::make_unique<text::PrecompiledCharsmap>(charsmap, spiece_path);
    impl->model_size = impl->sp->GetPieceSize();
    impl->unk_id = impl->sp->unk_id();
    // transformers' T5Converter appends the sentinels in reverse: <extra_id_0> gets the last id.
    const auto extra_ids = json_get<int64_t>(config, "extra_ids", 100, config_path);
    if (extra_ids < 0) fail("{}: extra_ids must be >= 0, got {}", config_path, extra_ids);
    for (int64_t i = extra_ids - 1; i >= 0; --i)
      impl->appended.emplace(fmt::format("<extra_id_{}>", i), impl->model_size + (extra_ids - 1 - i));
    for (int64_t i = 0; i < extra_ids; ++i) file_added.push_back({fmt::format("<extra_id_{}>", i)});
  } else {
    impl->where = json_path;
    const Json j = read_json_file(json_path);
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
      fail("{}: missing or malformed 'model'", json_path);
    const Json& model = j["model"];
    const std::string type = json_get<std::string>(model, "type", "Unigram", json_path);
    if (type != "Unigram") fail("{}: model type '{}' is not supported (T5 tokenizers are Unigram)", json_path, type);
    if (!model.contains("vocab") || !model["vocab"].is_array() || model["vocab"].empty())
      fail("{}: model.vocab must be a non-empty list of [piece, score] pairs", json_path);
    std::vector<std::pair<std::string, double>> vocab;
    vocab.reserve(model["vocab"].size());
    for (size_t i = 0; i < model["vocab"].size(); ++i) {
      const Json& entry = model["vocab"][i];
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number())
        fail("{}: model.vocab[{}] is not a [piece, score] pair ({})", json_path, i, entry.dump());
      vocab.emplace_back(entry[0].get<std::string>(), entry[1].get<double>());
      text::check_utf8(vocab.back().first, fmt::format("{}: model.vocab[{}]", json_path, i));
    }
    impl->unk_id = json_get<int64_t>(model, "unk_id", 2, json_path);
    if (impl->unk_id < 0 || impl->unk_id >= static_cast<int64_t>(vocab.size()))
      fail("{}: model.unk_id {} is outside the vocabulary of {} pieces", json_path, impl->unk_id, vocab.size());
    impl->model_size = static_cast<int64_t>(vocab.size());
    impl->unigram = std::make_unique<text::UnigramModel>(std::move(vocab), impl->unk_id);

    // transformers keeps only the Precompiled step of the normalizer (alone or in a Sequence).
    if (j.contains("normalizer") && j["normalizer"].is_object()) {
      const Json& normalizer = j["normalizer"];
      const Json steps = normalizer.value("type", "") == "Sequence" ? normalizer.value("normalizers", Json::array())
                                                                    : Json::array({normalizer});
      for (const Json& step : steps) {
        if (!step.is_object() || step.value("type", "") != "Precompiled") continue;
        const Json charsmap = step.value("precompiled_charsmap", Json());
        if (charsmap.is_string() && !charsmap.get<std::string>().empty()) {
          impl->charsmap = std::make_unique<text::PrecompiledCharsmap>(
              base64_decode(charsmap.get<std::string>(), json_path), json_path);
        }
        break;
      }
    }
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) fail("{}: 'added_tokens' must be a list", json_path);
      for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
        const Json& entry = j["added_tokens"][i];
        if (!entry.is_object() || !entry.contains("content") || !entry["content"].is_string())
          fail("{}: added_tokens[{}] has no 'content' string", json_path, i);
        auto t = token_entry(entry, json_path);
        if (t) file_added.push_back(*t);
      }
    }
  }

  const AddedToken pad = special_token("pad_token", "<pad>");
  const AddedToken eos = special_token("eos_token", "</s>");
  const AddedToken unk = special_token("unk_token", "<unk>");
  for (const AddedToken& t : file_added) impl->add_token(t);
  for (const AddedToken& t : {pad, eos, unk}) impl->add_token(t);
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
    if (!config.contains(key) || !config[key].is_array()) continue;
    for (const Json& value : config[key])
      if (auto t = token_entry(value, config_path)) impl->add_token(*t);
  }
  if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
    for (const auto& [id, value] : config["added_tokens_decoder"].items())
      if (auto t = token_entry(value, config_path)) impl->add_token(*t);
  }
  impl->index_added_tokens();
  impl->pad_id = impl->model_token_to_id(pad.content);
  impl->eos_id = impl->model_token_to_id(eos.content);
  return T5Tokenizer(std::move(impl));
}

std::vector<int64_t> T5Tokenizer::encode(const std::string& text) const {
  text::check_utf8(text, "tokenizer input");
  std::vector<int64_t> ids = impl_->encode_text(text);
  ids.push_back(impl_->eos_id);
  return ids;
}

TokenizerOutput T5Tokenizer::operator()(const std::vector<std::string>& texts, int64_t max_length) const {
  if (max_length < 1) fail("tokenizer: max_length must be at least 1 (room for </s>), got {}", max_length);
  return text::pad_and_truncate(
      texts, max_length, [&](const std::string& t) { return impl_->encode_text(t); }, std::nullopt, impl_->eos_id,
      impl_->pad_id);
}

int64_t T5Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int64_t T5Tokenizer::pad_token_id() const { return impl_->pad_id; }
int64_t T5Tokenizer::eos_token_id() const { return impl_->eos_id; }
int64_t T5Tokenizer::unk_token_id() const { return impl_->unk_id; }
int64_t T5Tokenizer::token_to_id(const std::string& token) const { return impl_->model_token_to_id(token); }
TokenizerSource T5Tokenizer::source() const { return impl_->source; }

namespace text {

TokenizerOutput pad_and_truncate(const std::vector<std::string>& texts, int64_t max_length,
                                 const EncodeText& encode_text, std::optional<int64_t> bos_id, int64_t eos_id,
                                 int64_t pad_id, const OnTruncated& on_truncated) {
  const int64_t room = max_length - (bos_id ? 2 : 1);
  VGEN_CHECK(room >= 0, "tokenizer: max_length {} leaves no room for the special tokens", max_length);
  const auto batch = static_cast<int64_t>(texts.size());
  TokenizerOutput out;
  out.input_ids = Tensor::empty({batch, max_length}, DType::I64);
  out.attention_mask = Tensor::empty({batch, max_length}, DType::I64);
  int64_t* ids = out.input_ids.data<int64_t>();
  int64_t* mask = out.attention_mask.data<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const std::string& input = texts[static_cast<size_t>(b)];
    check_utf8(input, fmt::format("tokenizer input {}", b));
    std::vector<int64_t> tokens = encode_text(input);
    if (static_cast<int64_t>(tokens.size()) > room) {
      if (on_truncated) on_truncated(static_cast<size_t>(b), std::vector<int64_t>(tokens.begin() + room, tokens.end()));
      tokens.resize(static_cast<size_t>(room));
    }
    if (bos_id) tokens.insert(tokens.begin(), *bos_id);
    tokens.push_back(eos_id);
    const auto n = static_cast<int64_t>(tokens.size());
    int64_t* row = ids + b * max_length;
    std::copy(tokens.begin(), tokens.end(), row);
    std::fill(row + n, row + max_length, pad_id);
    std::fill(mask + b * max_length, mask + b * max_length + n, int64_t{1});
    std::fill(mask + b * max_length + n, mask + (b + 1) * max_length, int64_t{0});
    out.lengths.push_back(n);
  }
  return out;
}

}  // namespace text
}  // namespace vgen
