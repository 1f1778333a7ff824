#include "serving/http_util.h"

#include <utility>

#include <fmt/format.h>

namespace vgen::serving {

using nlohmann::json;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string base64(const std::vector<uint8_t>& in) {
  static constexpr char kTable[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += kTable[v >> 18];
    out += kTable[(v >> 12) & 63];
    out += kTable[(v >> 6) & 63];
    out += kTable[v & 63];
  }
  if (i < in.size()) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (i + 1 < in.size() ? uint32_t{in[i + 1]} << 8 : 0);
    out += kTable[v >> 18];
    out += kTable[(v >> 12) & 63];
    out += i + 1 < in.size() ? kTable[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string printable(const std::string& s) {
  std::string out = s.substr(0, 200);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s.size() > 200 ? out + "..." : out;
}

void send_json(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(HttpResponse& res, const ApiError& e) {
  send_json(res, e.status, error_body(e.status, e.what(), e.param, e.code));
  if (e.status == 429 || e.status == 503) res.set_header("retry-after", "1");
  // A failed generation, or a server that cannot write its output, is not transient: the SDK
  // must not retry it.
  if (e.code == "generation_failed" || e.code == "mp4_unavailable") res.set_header("x-should-retry", "false");
}

namespace {
thread_local std::string t_job_id;
}  // namespace

void note_job_id(const std::string& id) { t_job_id = id; }

std::string take_job_id() { return std::exchange(t_job_id, {}); }

RequestFields body_fields(const HttpRequest& req) {
  if (req.is_multipart_form_data()) {
    return RequestFields::from_form(req.parts);
  }
  return RequestFields::from_json(req.body);
}

void reject_unknown_query(const HttpRequest& req, const std::set<std::string>& accepted) {
  for (const auto& [name, value] : req.params)
    if (!accepted.count(name)) bad_field(name, fmt::format("unknown query parameter '{}'", printable(name)));
}

}  // namespace vgen::serving
