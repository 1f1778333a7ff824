#include "media/metadata.h"

#include <zlib.h>

#include <cstring>

#include "core/error.h"
#include "media/temp_file.h"

#ifdef VGEN_WITH_LIBAV
extern "C" {
#include <libavformat/avformat.h>
}
#include "media/libav.h"
#endif

namespace vgen::media {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

bool is_png(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kSignature, 8) == 0;
}

// keyword \0 flag=0 method=0 language \0 translated-keyword \0 text (PNG spec 11.3.4.5).
std::vector<uint8_t> itxt_chunk(const std::string& key, const std::string& value) {
  VGEN_CHECK(!key.empty() && key.size() <= 79 && key.find('\0') == std::string::npos && key.front() != ' ' &&
                 key.back() != ' ',
             "PNG metadata: '{}' is not a PNG keyword (1-79 characters, no leading or trailing space)", key);
  std::vector<uint8_t> data(key.begin(), key.end());
  for (uint8_t b : {0, 0, 0, 0, 0}) data.push_back(b);  // \0, flag, method, empty language \0, empty translation \0
  data.insert(data.end(), value.begin(), value.end());
  std::vector<uint8_t> chunk;
  append_be32(chunk, static_cast<uint32_t>(data.size()));
  const char type[4] = {'i', 'T', 'X', 't'};
  chunk.insert(chunk.end(), type, type + 4);
  chunk.insert(chunk.end(), data.begin(), data.end());
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, chunk.data() + 4, static_cast<uInt>(chunk.size() - 4));
  append_be32(chunk, static_cast<uint32_t>(crc));
  return chunk;
}

}  // namespace

std::vector<uint8_t> add_png_text(const std::vector<uint8_t>& png, const Metadata& metadata) {
  VGEN_CHECK(is_png(png) && png.size() >= 33 && std::memcmp(png.data() + 12, "IHDR", 4) == 0,
             "PNG metadata: the bytes are not a PNG starting with IHDR");
  const size_t after_ihdr = 8 + 12 + read_be32(png.data() + 8);
  std::vector<uint8_t> out(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(after_ihdr));
  for (const auto& [key, value] : metadata) {
    const std::vector<uint8_t> chunk = itxt_chunk(key, value);
    out.insert(out.end(), chunk.begin(), chunk.end());
  }
  out.insert(out.end(), png.begin() + static_cast<std::ptrdiff_t>(after_ihdr), png.end());
  return out;
}

Metadata read_png_metadata(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  VGEN_CHECK(is_png(bytes), "'{}' is not a PNG file", path);
  Metadata out;
  size_t pos = 8;
  while (pos + 12 <= bytes.size()) {
    const uint32_t length = read_be32(bytes.data() + pos);
    VGEN_CHECK(pos + 12 + length <= bytes.size(), "'{}': truncated PNG chunk at byte {}", path, pos);
    const std::string type(reinterpret_cast<const char*>(bytes.data() + pos + 4), 4);
    const std::string data(reinterpret_cast<const char*>(bytes.data() + pos + 8), length);
    pos += 12 + length;
    if (type == "IEND") break;
    const size_t key_end = data.find('\0');
    if (key_end == std::string::npos) continue;
    const std::string key = data.substr(0, key_end);
    if (type == "tEXt") {
      out.emplace_back(key, data.substr(key_end + 1));
    } else if (type == "iTXt" && key_end + 2 < data.size() && data[key_end + 1] == 0) {
      const size_t language_end = data.find('\0', key_end + 3);
      const size_t translated_end = language_end == std::string::npos ? std::string::npos : data.find('\0', language_end + 1);
      if (translated_end != std::string::npos) out.emplace_back(key, data.substr(translated_end + 1));
    }
  }
  return out;
}

Metadata read_video_metadata(const std::string& path) {
#ifdef VGEN_WITH_LIBAV
  libav::route_logs_to_spdlog();
  AVFormatContext* fmt = nullptr;
  const std::string url = "file:" + path;
  const int ret = avformat_open_input(&fmt, url.c_str(), nullptr, nullptr);
  VGEN_CHECK(ret >= 0, "cannot read '{}': {}", path, libav::error_string(ret));
  Metadata out;
  const AVDictionaryEntry* e = nullptr;
  while ((e = av_dict_get(fmt->metadata, "", e, AV_DICT_IGNORE_SUFFIX)) != nullptr) out.emplace_back(e->key, e->value);
  avformat_close_input(&fmt);
  return out;
#else
  fail("reading the metadata of '{}' needs FFmpeg's libraries, which this build of vgen does not have", path);
#endif
}

}  // namespace vgen::media
