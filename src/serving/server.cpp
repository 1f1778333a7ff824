// Server: the HTTP server's lifetime. Binds, loads the model in the background, serves the
// routes until stop().
#include "serving/server.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "serving/access.h"
#include "serving/http_server.h"
#include "serving/http_util.h"
#include "serving/routes.h"
#include "serving/server_state.h"

namespace vgen::serving {
namespace {

ServeOptions checked(ServeOptions o) {
  VGEN_CHECK(o.max_queue > 0, "max_queue must be at least 1");
  VGEN_CHECK(o.max_connections > 0, "max_connections must be at least 1");
  VGEN_CHECK(o.header_timeout.count() > 0 && o.body_timeout.count() > 0 && o.write_timeout.count() > 0,
             "the HTTP timeouts must be positive");
  return o;
}

// Requests with more body than this give their freed memory back to the system.
constexpr size_t kTrimAfterBytes = 64u << 10;
// The kernel's queue of connections not yet accepted.
constexpr int kListenBacklog = 1024;

bool is_chunked(const HttpRequest& req) {
  return req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
}

// The declared Content-Length; 0 when absent, SIZE_MAX when not a number.
size_t content_length(const HttpRequest& req) {
  if (!req.has_header("Content-Length")) return 0;
  const std::string v = req.get_header_value("Content-Length");
  if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) return SIZE_MAX;
  return std::stoull(v);
}

// The body limit of a request: files come only in multipart bodies; JSON ones are small.
size_t body_limit(const HttpRequest& req, size_t max_body_bytes) {
  return req.is_multipart_form_data() ? max_body_bytes : std::min(max_body_bytes, kMaxJsonBytes);
}

// One descriptor per connection and a few per job: lift the soft limit to the hard one.
void raise_open_files_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::vector<Route> all_routes(ServerState& state) {
  std::vector<Route> routes = model_routes(state);
  for (std::vector<Route> more : {image_routes(state), video_routes(state)})
    routes.insert(routes.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  return routes;
}

}  // namespace

ServerState::ServerState(ServeOptions o)
    : options(checked(std::move(o))), media(options.media_dir), queue(options.max_queue) {
  store = std::make_unique<JobStore>(media.database_path());
  if (store->interrupted_jobs() > 0)
    spdlog::warn("{} job(s) were unfinished when the previous server stopped; marked failed (server_restarted)",
                 store->interrupted_jobs());
  media.sweep(store->ids());
}

struct Server::Impl {
  ServerState state;
  ModelLoader loader;
  std::exception_ptr load_error;
  std::thread loader_thread;
  Router router;
  std::atomic<bool> stopping{false};
  std::atomic<bool> trim_wanted{false};
  std::thread trimmer;  // gives freed memory back to the system (malloc_trim) after large requests
  std::unique_ptr<HttpServer> http;  // last: destroyed first, while what its handlers use lives

  Impl(ServeOptions o, ModelLoader l);
  ~Impl();
  std::optional<ApiError> check_access(const HttpRequest& req, const Route& route) const;
  bool before_body(const HttpRequest& req, HttpResponse& res, size_t& limit) const;
  void handle(HttpRequest& req, HttpResponse& res) const;
  void log(const HttpRequest& req, const HttpResponse& res, double ms);
  void run();
  void stop();
};

Server::Impl::Impl(ServeOptions o, ModelLoader l)
    : state(std::move(o)),
      loader(std::move(l)),
      router(all_routes(state),
             [this](const HttpRequest& req, const Route& route) { return check_access(req, route); },
             [this] { return state.ready.load(); }) {
  raise_open_files_limit();
  const ServeOptions& options = state.options;
  HttpServerOptions http_options;
  http_options.host = options.host;
  http_options.port = options.port;
  http_options.header_timeout = options.header_timeout;
  http_options.body_timeout = options.body_timeout;
  http_options.write_timeout = options.write_timeout;
  // Sync requests hold a handler thread while they wait in the queue: enough threads that
  // polls and health checks still get one when the queue is full.
  http_options.handler_threads = std::max(options.max_connections, options.max_queue + 32);
  http_options.listen_backlog = kListenBacklog;
  HttpHandlers handlers;
  handlers.before_body = [this](const HttpRequest& req, HttpResponse& res, size_t& limit) {
    return before_body(req, res, limit);
  };
  handlers.handle = [this](HttpRequest& req, HttpResponse& res) { handle(req, res); };
  handlers.log = [this](const HttpRequest& req, const HttpResponse& res, double ms) { log(req, res, ms); };
  http = std::make_unique<HttpServer>(std::move(http_options), std::move(handlers));
  if (state.options.api_key.empty() && !is_loopback_host(state.options.host))
    spdlog::warn("serving {} without an API key: anyone who can reach it can queue jobs (use --api-key)",
                 state.options.host);
}

std::optional<ApiError> Server::Impl::check_access(const HttpRequest& req, const Route& route) const {
  const AccessPolicy policy{state.options.api_key, state.options.host};
  if (std::optional<ApiError> refused = check_host_and_origin(req, policy)) return refused;
  if (!route.open && !authorized(req, state.options.api_key))
    return ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'", std::nullopt,
                    "invalid_api_key");
  if (req.method == "POST" || req.method == "PUT" || req.method == "PATCH") return check_content_type(req);
  return std::nullopt;
}

// From the headers alone, before any body byte is read: the method, the declared size, the
// route, the access checks (Host/Origin, API key, content type).
bool Server::Impl::before_body(const HttpRequest& req, HttpResponse& res, size_t& limit) const {
  static const std::set<std::string> kMethods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
  if (!kMethods.count(req.method)) {
    send_error(res, ApiError(501, fmt::format("unknown HTTP method '{}'", printable(req.method)), std::nullopt,
                             "method_not_implemented"));
    return true;
  }
  limit = body_limit(req, state.options.max_body_bytes);
  if (content_length(req) > limit && !is_chunked(req)) {
    send_error(res, ApiError(413, fmt::format("the request body is over the limit of {} bytes", limit), std::nullopt,
                             "request_too_large"));
    return true;
  }
  if (router.refuse_before_body(req, res)) return true;
  if (req.is_multipart_form_data() && is_chunked(req)) {
    send_error(res, ApiError(411, "send multipart/form-data bodies with a Content-Length, not chunked", std::nullopt,
                             "length_required"));
    return true;
  }
  return false;
}

void Server::Impl::handle(HttpRequest& req, HttpResponse& res) const {
  take_job_id();  // nothing left from an earlier request on this thread
  router.dispatch(req, res);
  res.job_id = take_job_id();
}

// The access log: one line per request. Metrics label by route pattern, never the raw path.
void Server::Impl::log(const HttpRequest& req, const HttpResponse& res, double ms) {
  Params ignored;
  const Route* route = req.method.empty() ? nullptr : router.find(req.path, ignored);
  state.metrics.count_request(route ? route->pattern : "(unknown)", req.method, res.status);
  spdlog::info("{} {} {} {} {:.1f} ms{}{}", req.remote_addr.empty() ? "-" : req.remote_addr,
               req.method.empty() ? "-" : printable(req.method), req.path.empty() ? "-" : printable(req.path),
               res.status, ms, res.job_id.empty() ? "" : " ", printable(res.job_id));
  // The allocator policy. A large body (and its parse) was freed: give the pages back, as
  // glibc otherwise keeps them in the thread's arena. Measured, 3 rounds of 40 concurrent
  // 240 KB JSON bodies from 58 MiB idle: no policy 84-95 MiB after, this trim 71-78 MiB.
  // Not done, also measured: capping arenas (M_ARENA_MAX=2) made it worse (106-139 MiB); a
  // fixed mmap threshold (M_MMAP_THRESHOLD) kept RSS flat but made the CPU backend's
  // generations about 2x slower (every tensor its own mapping). JSON bodies are refused
  // over 256 KiB before they are read, so only multipart uploads make large buffers. The
  // 0.7 GB per request of issue 20 came from parsing deep nesting, now refused unparsed.
  // The trim runs on its own thread a moment later, once concurrent requests have freed theirs.
  const size_t body = is_chunked(req) ? kTrimAfterBytes + 1 : content_length(req);
  // Not after large responses (MP4s): a trim also returns the worker's freed tensors, and
  // the next generation would fault them in again.
  if (body > kTrimAfterBytes && body != SIZE_MAX) trim_wanted = true;
}

Server::Impl::~Impl() {
  stop();
  if (trimmer.joinable()) trimmer.join();
  if (loader_thread.joinable()) loader_thread.join();
}

void Server::Impl::run() {
  // Connections are answered from here on (/health: 503 while the model loads); "listening"
  // is logged once the model is ready, so that a model that cannot load fails before it.
  spdlog::info("loading the model; http://{}:{} answers 503 until it is ready", state.options.host, http->port());
  loader_thread = std::thread([this] {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      state.model = loader();
      state.model_created = unix_now();
      state.queue.start();
      state.media.keep();  // started: a media directory made for it stays
      state.ready = true;
      spdlog::info("model '{}' ({}, {}) ready in {:.1f} s", state.model.info.id, state.model.pipeline->class_name(),
                   state.model.pipeline->capabilities().task_list(), seconds_since(t0));
      if (!stopping) spdlog::info("listening on http://{}:{}", state.options.host, http->port());
    } catch (const std::exception& e) {
      load_error = std::current_exception();
      spdlog::error("cannot load the model: {}", e.what());
      stop();
    }
  });
  trimmer = std::thread([this] {
    while (!stopping) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (trim_wanted.exchange(false)) malloc_trim(0);
    }
  });
  http->run();
  state.queue.shutdown();
  loader_thread.join();
  if (load_error) std::rethrow_exception(load_error);
}

void Server::Impl::stop() {
  stopping = true;
  state.queue.shutdown();
  http->stop();
}

Server::Server(ServeOptions options, ModelLoader loader)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(loader))) {}

Server::~Server() = default;

int Server::port() const { return impl_->http->port(); }

void Server::run() { impl_->run(); }

void Server::stop() { impl_->stop(); }

}  // namespace vgen::serving
