#include "serving/http_message.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include <fmt/format.h>

#include "serving/api_error.h"

namespace vgen::serving {
namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX escapes decoded (a malformed one is kept as sent); '+' a space when `plus_is_space`.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += plus_is_space && s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

[[noreturn]] void bad_form(const std::string& message) {
  throw ApiError(400, "malformed multipart/form-data body: " + message, std::nullopt, "invalid_body");
}

// The parameters of a header value such as `form-data; name="a"; filename="b.png"`:
// lower-case names, unquoted values (backslash escapes resolved).
std::vector<std::pair<std::string, std::string>> header_params(std::string_view value) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = value.find(';');
  while (i != std::string_view::npos && i < value.size()) {
    ++i;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    const size_t eq = value.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string name(trim(value.substr(i, eq - i)));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    size_t j = eq + 1;
    while (j < value.size() && (value[j] == ' ' || value[j] == '\t')) ++j;
    std::string v;
    if (j < value.size() && value[j] == '"') {
      ++j;
      while (j < value.size() && value[j] != '"') {
        if (value[j] == '\\' && j + 1 < value.size()) ++j;
        v += value[j++];
      }
      if (j >= value.size()) bad_form("an unterminated quoted parameter");
      ++j;
      i = value.find(';', j);
    } else {
      const size_t end = value.find(';', j);
      v = std::string(trim(value.substr(j, end == std::string_view::npos ? std::string_view::npos : end - j)));
      i = end;
    }
    out.emplace_back(std::move(name), std::move(v));
  }
  return out;
}

}  // namespace

bool has_header_in(const HeaderList& headers, const std::string& name) {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return iequal(h.first, name); });
}

std::string header_in(const HeaderList& headers, const std::string& name) {
  for (const auto& [k, v] : headers)
    if (iequal(k, name)) return v;
  return {};
}

std::string HttpRequest::get_param_value(const std::string& name) const {
  const auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

bool HttpRequest::is_multipart_form_data() const {
  const std::string type = get_header_value("Content-Type");
  return type.size() >= 19 && iequal(std::string_view(type).substr(0, 19), "multipart/form-data");
}

void HttpResponse::set_header(const std::string& name, const std::string& value) {
  for (auto& [k, v] : headers)
    if (iequal(k, name)) {
      v = value;
      return;
    }
  headers.emplace_back(name, value);
}

std::string HttpResponse::get_header_value(const std::string& name) const {
  if (iequal(name, "Content-Type")) return content_type;
  return header_in(headers, name);
}

bool parse_target(const std::string& target, std::string& path, std::multimap<std::string, std::string>& params) {
  if (target.empty() || target[0] != '/') return false;
  const size_t q = target.find('?');
  path = percent_decode(std::string_view(target).substr(0, q), false);
  params.clear();
  if (q == std::string::npos) return true;
  std::string_view query = std::string_view(target).substr(q + 1);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      params.emplace(percent_decode(pair.substr(0, eq), true),
                     eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1), true));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return true;
}

std::vector<FormPart> parse_multipart(const std::string& body, const std::string& content_type) {
  std::string boundary;
  for (auto& [name, value] : header_params(content_type))
    if (name == "boundary") boundary = value;
  if (boundary.empty() || boundary.size() > 70) bad_form("the Content-Type has no boundary (1 to 70 characters)");
  const std::string delimiter = "--" + boundary;
  const std::string_view b(body);
  // The first delimiter: at the start, or after a preamble ending in CRLF.
  size_t pos = b.substr(0, delimiter.size()) == delimiter ? 0 : b.find("\r\n" + delimiter);
  if (pos == std::string_view::npos) bad_form(fmt::format("no part starts with the boundary '{}'", delimiter));
  if (pos != 0) pos += 2;
  std::vector<FormPart> parts;
  const std::string next_delimiter = "\r\n" + delimiter;
  while (true) {
    pos += delimiter.size();
    if (b.substr(pos, 2) == "--") return parts;  // the closing delimiter; an epilogue is ignored
    while (pos < b.size() && (b[pos] == ' ' || b[pos] == '\t')) ++pos;
    if (b.substr(pos, 2) != "\r\n") bad_form("a boundary line does not end with CRLF");
    pos += 2;
    if (parts.size() == kMaxFormParts) bad_form(fmt::format("more than {} parts", kMaxFormParts));
    const size_t head_end = b.find("\r\n\r\n", pos);
    const bool empty_head = b.substr(pos, 2) == "\r\n";
    if (!empty_head && (head_end == std::string_view::npos || head_end - pos > kMaxFormPartHeaderBytes))
      bad_form(fmt::format("a part's headers do not end within {} bytes", kMaxFormPartHeaderBytes));
    FormPart part;
    bool has_name = false;
    const std::string_view head = empty_head ? std::string_view() : b.substr(pos, head_end - pos);
    size_t line_start = 0;
    while (line_start < head.size()) {
      size_t line_end = head.find("\r\n", line_start);
      if (line_end == std::string_view::npos) line_end = head.size();
      const std::string_view line = head.substr(line_start, line_end - line_start);
      line_start = line_end + 2;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) bad_form("a part header line has no ':'");
      const std::string_view name = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
      if (iequal(name, "Content-Disposition")) {
        if (!iequal(value.substr(0, std::min<size_t>(value.find(';'), value.size())), "form-data"))
          bad_form("a part's Content-Disposition is not form-data");
        for (auto& [k, v] : header_params(value)) {
          if (k == "name") {
            part.name = std::move(v);
            has_name = true;
          } else if (k == "filename") {
            part.filename = std::move(v);
          }
        }
      } else if (iequal(name, "Content-Type")) {
        part.content_type = std::string(value);
      }
    }
    if (!has_name) bad_form("a part has no Content-Disposition name");
    const size_t content_start = empty_head ? pos + 2 : head_end + 4;
    const size_t content_end = b.find(next_delimiter, content_start);
    if (content_end == std::string_view::npos) bad_form("the body ends without its closing boundary");
    part.content.assign(b.substr(content_start, content_end - content_start));
    parts.push_back(std::move(part));
    pos = content_end + 2;
  }
}

}  // namespace vgen::serving
