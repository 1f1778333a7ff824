#include "serving/router.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "serving/api_error.h"
#include "serving/http_util.h"
#include "serving/job_store.h"

namespace vgen::serving {
namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 1;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const size_t end = slash == std::string::npos ? path.size() : slash;
    out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

bool match_route(const std::string& pattern, const std::string& path, Params& params) {
  if (path.empty() || path[0] != '/') return false;
  const std::vector<std::string> want = split_path(pattern), got = split_path(path);
  if (want.size() != got.size()) return false;
  params.clear();
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].size() > 2 && want[i].front() == '{') {
      if (got[i].empty()) return false;
      params.push_back(got[i]);
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  return true;
}

Router::Router(std::vector<Route> routes, AccessCheck access, std::function<bool()> ready)
    : routes_(std::move(routes)), access_(std::move(access)), ready_(std::move(ready)) {}

const Route* Router::find(const std::string& path, Params& params) const {
  for (const Route& r : routes_)
    if (match_route(r.pattern, path, params)) return &r;
  return nullptr;
}

const Handler& Router::checked_handler(const HttpRequest& req, HttpResponse& res, Params& params) const {
  const Route* route = find(req.path, params);
  if (!route) throw ApiError(404, fmt::format("unknown path '{}'", printable(req.path)), std::nullopt, "not_found");
  const std::string method = req.method == "HEAD" ? "GET" : req.method;
  const Handler* handler = nullptr;
  std::string allow;
  for (const auto& [m, h] : route->methods) {
    if (m == method) handler = &h;
    allow += (allow.empty() ? "" : ", ") + m;
  }
  if (!handler) {
    res.set_header("Allow", allow);
    throw ApiError(405,
                   fmt::format("method {} is not allowed on {} (allowed: {})", printable(req.method), route->pattern,
                               allow),
                   std::nullopt, "method_not_allowed");
  }
  if (std::optional<ApiError> refused = access_(req, *route)) {
    if (refused->status == 401) res.set_header("WWW-Authenticate", "Bearer");
    throw *refused;
  }
  if (!route->open && !ready_()) throw ApiError(503, "the model is still loading; retry shortly", std::nullopt, "model_loading");
  return *handler;
}

bool Router::refuse_before_body(const HttpRequest& req, HttpResponse& res) const {
  try {
    Params params;
    checked_handler(req, res, params);
    return false;
  } catch (const ApiError& e) {
    if (e.status == 503) return false;  // may be ready once the body is in
    send_error(res, e);
    return true;
  }
}

void Router::dispatch(const HttpRequest& req, HttpResponse& res) const {
  try {
    Params params;
    const Handler& handler = checked_handler(req, res, params);
    handler(req, res, params);
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const JobStoreError& e) {
    // Disk full or an I/O error: its message names no file (the log has the request).
    spdlog::error("{} {}: {}", printable(req.method), printable(req.path), e.what());
    send_json(res, 500, error_body(500, e.what(), std::nullopt, "storage_error"));
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", printable(req.method), printable(req.path), e.what());
    send_json(res, 500, error_body(500, fmt::format("internal error: {}", e.what()), std::nullopt, "internal_error"));
  } catch (...) {
    send_json(res, 500, error_body(500, "internal error", std::nullopt, "internal_error"));
  }
}

}  // namespace vgen::serving
