// The route table: path patterns with {placeholders}, the methods each answers, and the
// dispatch that turns a miss into 404/405, asks the access check (403/401/415), checks model
// readiness (503), and turns every exception into an OpenAI-shaped error.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "serving/http_message.h"

#include "serving/api_error.h"

namespace vgen::serving {

using Params = std::vector<std::string>;  // the {placeholder} path segments, in order
using Handler = std::function<void(const HttpRequest&, HttpResponse&, const Params&)>;

struct Route {
  std::string pattern;  // "/v1/videos/{id}": the metrics label
  bool open = false;    // no API key, answers while the model loads
  std::vector<std::pair<std::string, Handler>> methods;
};

// Matches `path` against a pattern; fills the placeholders.
bool match_route(const std::string& pattern, const std::string& path, Params& params);

// Whether a request may reach its route, from its headers alone: the error that refuses it.
using AccessCheck = std::function<std::optional<ApiError>(const HttpRequest&, const Route&)>;

class Router {
 public:
  // `access` is asked for every matched route; `ready` for every route that is not open.
  Router(std::vector<Route> routes, AccessCheck access, std::function<bool()> ready);

  // The first route matching `path` (nullptr when none), with its placeholders.
  const Route* find(const std::string& path, Params& params) const;
  // The checks dispatch() makes before the handler that need no body (404, 405, access).
  // Answers the request and returns true when one refuses it.
  bool refuse_before_body(const HttpRequest& req, HttpResponse& res) const;
  // Answers a request: the route's handler, or the error it or the checks throw.
  void dispatch(const HttpRequest& req, HttpResponse& res) const;

 private:
  // The matched route's handler; throws the ApiError of the first check that refuses.
  const Handler& checked_handler(const HttpRequest& req, HttpResponse& res, Params& params) const;

  std::vector<Route> routes_;
  AccessCheck access_;
  std::function<bool()> ready_;
};

}  // namespace vgen::serving
