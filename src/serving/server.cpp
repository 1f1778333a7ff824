// Server: the HTTP server's lifetime. Binds, loads the model in the background, serves the
// routes until stop().
#include "serving/server.h"

#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include <set>

#include <fmt/format.h>

#include "serving/access.h"
#include "serving/http_util.h"
#include "serving/routes.h"
#include "serving/server_state.h"

namespace vgen::serving {
namespace {

ServeOptions checked(ServeOptions o) {
  VGEN_CHECK(o.max_queue > 0, "max_queue must be at least 1");
  VGEN_CHECK(o.max_connections > 0, "max_connections must be at least 1");
  return o;
}

// A refused request's body up to this size is read and dropped, so that the client reads the
// answer rather than a reset connection; a larger one is not read at all.
constexpr size_t kDrainBytes = 1u << 20;
// Requests with more body than this give their freed memory back to the system.
constexpr size_t kTrimAfterBytes = 64u << 10;
// The kernel's queue of connections not yet accepted (httplib's own is 5).
constexpr int kListenBacklog = 1024;

thread_local std::chrono::steady_clock::time_point t_request_start;

bool is_chunked(const httplib::Request& req) {
  return req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
}

// The declared Content-Length; 0 when absent, SIZE_MAX when not a number.
size_t content_length(const httplib::Request& req) {
  if (!req.has_header("Content-Length")) return 0;
  const std::string v = req.get_header_value("Content-Length");
  if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) return SIZE_MAX;
  return std::stoull(v);
}

// The body limit of a request: files come only in multipart bodies; JSON ones are small.
size_t body_limit(const httplib::Request& req, size_t max_body_bytes) {
  return req.is_multipart_form_data() ? max_body_bytes : std::min(max_body_bytes, kMaxJsonBytes);
}

void too_large(httplib::Response& res, size_t max_body_bytes) {
  send_error(res, ApiError(413, fmt::format("the request body is over the limit of {} bytes", max_body_bytes),
                           std::nullopt, "request_too_large"));
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
  httplib::Server http;
  int port = 0;
  int listen_fd = -1;
  std::atomic<bool> stopping{false};
  std::atomic<bool> trim_wanted{false};
  std::thread trimmer;  // gives freed memory back to the system (malloc_trim) after large requests
  std::atomic<bool> listening{false};
  std::atomic<bool> listen_done{false};

  Impl(ServeOptions o, ModelLoader l);
  ~Impl();
  std::optional<ApiError> check_access(const httplib::Request& req, const Route& route) const;
  void read_body_and_dispatch(const httplib::Request& req, httplib::Response& res,
                              const httplib::ContentReader& reader);
  void setup_http();
  void run();
  void stop();
};

Server::Impl::Impl(ServeOptions o, ModelLoader l)
    : state(std::move(o)),
      loader(std::move(l)),
      router(all_routes(state),
             [this](const httplib::Request& req, const Route& route) { return check_access(req, route); },
             [this] { return state.ready.load(); }) {
  raise_open_files_limit();
  setup_http();
  const ServeOptions& options = state.options;
  const bool bound = options.port == 0 ? (port = http.bind_to_any_port(options.host)) > 0
                                       : http.bind_to_port(options.host, options.port);
  if (options.port != 0) port = options.port;
  if (!bound) fail("cannot listen on {}:{} (address in use, or not an address of this host)", options.host, options.port);
  // Listening again on a listening socket only changes its backlog (Linux).
  if (listen_fd >= 0 && ::listen(listen_fd, kListenBacklog) != 0)
    spdlog::warn("cannot raise the listen backlog to {}", kListenBacklog);
  if (state.options.api_key.empty() && !is_loopback_host(state.options.host))
    spdlog::warn("listening on {} without an API key: anyone who can reach it can queue jobs (use --api-key)",
                 state.options.host);
}

std::optional<ApiError> Server::Impl::check_access(const httplib::Request& req, const Route& route) const {
  const AccessPolicy policy{state.options.api_key, state.options.host};
  if (std::optional<ApiError> refused = check_host_and_origin(req, policy)) return refused;
  if (!route.open && !authorized(req, state.options.api_key))
    return ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'", std::nullopt,
                    "invalid_api_key");
  if (req.method == "POST" || req.method == "PUT" || req.method == "PATCH") return check_content_type(req);
  return std::nullopt;
}

// POST, PUT, PATCH and DELETE: the body is read here, within max_body_bytes whether it comes
// with a Content-Length or chunked, and only once the headers have passed every check.
void Server::Impl::read_body_and_dispatch(const httplib::Request& req, httplib::Response& res,
                                          const httplib::ContentReader& reader) {
  const bool has_body = is_chunked(req) || content_length(req) > 0;
  if (router.refuse_before_body(req, res)) {
    // Answered; read a small body to its end so that the client sees the answer.
    size_t drained = 0;
    if (has_body && !req.is_multipart_form_data())
      reader([&](const char*, size_t n) { return (drained += n) <= kDrainBytes; });
    return;
  }
  httplib::Request full = req;
  if (has_body) {
    const size_t limit = body_limit(req, state.options.max_body_bytes);
    size_t total = 0;
    bool over = false;
    const auto within = [&](size_t n) { return !(over = (total += n) > limit); };
    bool read = false;
    if (req.is_multipart_form_data()) {
      if (is_chunked(req)) {
        send_error(res, ApiError(411, "send multipart/form-data bodies with a Content-Length, not chunked",
                                 std::nullopt, "length_required"));
        return;
      }
      httplib::MultipartFormDataItems parts;
      read = reader(
          [&](const httplib::MultipartFormData& part) {
            parts.push_back(part);
            return within(part.name.size() + part.filename.size() + part.content_type.size());
          },
          [&](const char* data, size_t n) {
            if (!within(n) || parts.empty()) return false;
            parts.back().content.append(data, n);
            return true;
          });
      for (httplib::MultipartFormData& part : parts) full.files.emplace(part.name, std::move(part));
    } else {
      read = reader([&](const char* data, size_t n) {
        if (!within(n)) return false;
        full.body.append(data, n);
        return true;
      });
    }
    if (over) return too_large(res, limit);
    if (!read) {
      send_error(res, ApiError(400, "the request body could not be read (malformed, or the client stopped sending)",
                               std::nullopt, "invalid_body"));
      return;
    }
  }
  router.dispatch(full, res);
}

Server::Impl::~Impl() {
  stop();
  if (trimmer.joinable()) trimmer.join();
  if (loader_thread.joinable()) loader_thread.join();
}

void Server::Impl::setup_http() {
  const ServeOptions& options = state.options;
  // httplib serves a connection on one thread from start to end. Sync requests hold a thread
  // while they wait in the queue: enough threads that polls and health checks still get one
  // when the queue is full and slow clients hold some.
  const size_t threads = std::max(options.max_connections, options.max_queue + 32);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // One request per connection: a connection whose refused body was not read must not be
  // read on as if it held a next request, and idle keep-alive connections hold no thread.
  http.set_keep_alive_max_count(1);
  // Content-Length bodies are checked before routing; chunked ones as they are read.
  http.set_payload_max_length(options.max_body_bytes);
  // The default options add SO_REUSEPORT, with which a second server on the same port starts
  // and takes half the connections. SO_REUSEADDR alone still allows a quick restart.
  http.set_socket_options([this](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) fill_default_error(res);
  });
  // Runs once the headers are in, before any body is read.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_request_start = std::chrono::steady_clock::now();
    static const std::set<std::string> kMethods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    if (!kMethods.count(req.method)) {
      send_error(res, ApiError(501, fmt::format("unknown HTTP method '{}'", printable(req.method)), std::nullopt,
                               "method_not_implemented"));
      return httplib::Server::HandlerResponse::Handled;
    }
    const size_t length = content_length(req);
    if (length > body_limit(req, state.options.max_body_bytes)) {
      too_large(res, body_limit(req, state.options.max_body_bytes));
      return httplib::Server::HandlerResponse::Handled;
    }
    // A refused request with a large body is answered without reading it.
    if ((length > kDrainBytes || is_chunked(req)) && router.refuse_before_body(req, res))
      return httplib::Server::HandlerResponse::Handled;
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // "Expect: 100-continue": the refusal goes out before the client sends the body.
  http.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (content_length(req) > body_limit(req, state.options.max_body_bytes)) {
      too_large(res, body_limit(req, state.options.max_body_bytes));
      return res.status;
    }
    if (router.refuse_before_body(req, res)) return res.status;
    return 100;
  });
  const auto handler = [this](const httplib::Request& req, httplib::Response& res) { router.dispatch(req, res); };
  const auto body_handler = [this](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader) { read_body_and_dispatch(req, res, reader); };
  http.Get(".*", handler);
  http.Options(".*", handler);
  http.Post(".*", body_handler);
  http.Put(".*", body_handler);
  http.Patch(".*", body_handler);
  http.Delete(".*", body_handler);
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body(500, "internal server error", std::nullopt, "internal_error"));
  });
  // The access log: one line per request. Metrics label by route pattern, never the raw path.
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    Params ignored;
    const Route* route = router.find(req.path, ignored);
    state.metrics.count_request(route ? route->pattern : "(unknown)", req.method, res.status);
    const double ms = t_request_start.time_since_epoch().count() == 0
                          ? 0.0
                          : std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                                      t_request_start).count();
    t_request_start = {};
    const std::string job = take_job_id();
    spdlog::info("{} {} {} {} {:.1f} ms{}{}", req.remote_addr, printable(req.method), printable(req.path), res.status,
                 ms, job.empty() ? "" : " ", printable(job));
    // The allocator policy. A large body (and its parse) was freed: give the pages back, as
    // glibc otherwise keeps them in the thread's arena. Measured, 3 rounds of 40 concurrent
    // 240 KB JSON bodies from 58 MiB idle: no policy 84-95 MiB after, this trim 71-78 MiB.
    // Not done, also measured: capping arenas (M_ARENA_MAX=2) made it worse (106-139 MiB); a
    // fixed mmap threshold (M_MMAP_THRESHOLD) kept RSS flat but made the CPU backend's
    // generations about 2x slower (every tensor its own mapping). JSON bodies are refused
    // over 256 KiB before they are read, so only multipart uploads make large buffers. The
    // 0.7 GB per request of issue 20 came from parsing deep nesting, now refused unparsed.
    // (The body was read into a copy of the request: req.body is empty, its length is declared.)
    // The trim runs on its own thread a moment later, once concurrent requests have freed theirs.
    const size_t body = is_chunked(req) ? kTrimAfterBytes + 1 : content_length(req);
    // Not after large responses (MP4s): a trim also returns the worker's freed tensors, and
    // the next generation would fault them in again.
    if (body > kTrimAfterBytes) trim_wanted = true;
  });
}

void Server::Impl::run() {
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
  // Dekker-style handshake with stop(): either stop() sees `listening`, or this sees `stopping`.
  listening = true;
  if (!stopping) {
    spdlog::info("listening on http://{}:{}", state.options.host, port);
    http.listen_after_bind();
  }
  listen_done = true;
  state.queue.shutdown();
  loader_thread.join();
  if (load_error) std::rethrow_exception(load_error);
}

void Server::Impl::stop() {
  stopping = true;
  state.queue.shutdown();
  // httplib's stop() only acts once listening has begun.
  while (listening && !listen_done && !http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http.stop();
}

Server::Server(ServeOptions options, ModelLoader loader)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(loader))) {}

Server::~Server() = default;

int Server::port() const { return impl_->port; }

void Server::run() { impl_->run(); }

void Server::stop() { impl_->stop(); }

}  // namespace vgen::serving
