// The route table: path patterns with {placeholders}, the methods each answers, and the
// dispatch that turns a miss into 404/405, checks the API key (401) and model readiness
// (503), and turns every exception into an OpenAI-shaped error.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>

namespace vgen::serving {

using Params = std::vector<std::string>;  // the {placeholder} path segments, in order
using Handler = std::function<void(const httplib::Request&, httplib::Response&, const Params&)>;

struct Route {
  std::string pattern;  // "/v1/videos/{id}": the metrics label
  bool open = false;    // no API key, answers while the model loads
  std::vector<std::pair<std::string, Handler>> methods;
};

// Matches `path` against a pattern; fills the placeholders.
bool match_route(const std::string& pattern, const std::string& path, Params& params);

class Router {
 public:
  // `authorized` and `ready` are asked for every route that is not open.
  Router(std::vector<Route> routes, std::function<bool(const httplib::Request&)> authorized,
         std::function<bool()> ready);

  // The first route matching `path` (nullptr when none), with its placeholders.
  const Route* find(const std::string& path, Params& params) const;
  // Answers a request: the route's handler, or the error it or the checks throw.
  void dispatch(const httplib::Request& req, httplib::Response& res) const;

 private:
  std::vector<Route> routes_;
  std::function<bool(const httplib::Request&)> authorized_;
  std::function<bool()> ready_;
};

}  // namespace vgen::serving
