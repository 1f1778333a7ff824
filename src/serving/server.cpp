// Server: the HTTP server's lifetime. Binds, loads the model in the background, serves the
// routes until stop().
#include "serving/server.h"

#include <chrono>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "serving/access.h"
#include "serving/http_util.h"
#include "serving/routes.h"
#include "serving/server_state.h"

namespace vgen::serving {
namespace {

ServeOptions checked(ServeOptions o) {
  VGEN_CHECK(o.max_queue > 0, "max_queue must be at least 1");
  return o;
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
  std::atomic<bool> stopping{false};
  std::atomic<bool> listening{false};
  std::atomic<bool> listen_done{false};

  Impl(ServeOptions o, ModelLoader l);
  ~Impl();
  void setup_http();
  void run();
  void stop();
};

Server::Impl::Impl(ServeOptions o, ModelLoader l)
    : state(std::move(o)),
      loader(std::move(l)),
      router(all_routes(state), [this](const httplib::Request& req) { return authorized(req, state.options.api_key); },
             [this] { return state.ready.load(); }) {
  setup_http();
  const ServeOptions& options = state.options;
  const bool bound = options.port == 0 ? (port = http.bind_to_any_port(options.host)) > 0
                                       : http.bind_to_port(options.host, options.port);
  if (options.port != 0) port = options.port;
  if (!bound) fail("cannot listen on {}:{} (address in use, or not an address of this host)", options.host, options.port);
}

Server::Impl::~Impl() {
  stop();
  if (loader_thread.joinable()) loader_thread.join();
}

void Server::Impl::setup_http() {
  // Sync requests hold a thread while they wait in the queue: enough threads that polls and
  // health checks still get one when the queue is full.
  const size_t threads = std::max<size_t>(32, state.options.max_queue + 32);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  limit_requests(http, state.options.max_body_bytes);
  const auto handler = [this](const httplib::Request& req, httplib::Response& res) { router.dispatch(req, res); };
  http.Get(".*", handler);
  http.Post(".*", handler);
  http.Put(".*", handler);
  http.Patch(".*", handler);
  http.Delete(".*", handler);
  http.Options(".*", handler);
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body(500, "internal server error", std::nullopt, "internal_error"));
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    Params ignored;
    const Route* route = router.find(req.path, ignored);
    state.metrics.count_request(route ? route->pattern : "(unknown)", req.method, res.status);
    spdlog::debug("{} {} -> {}", req.method, req.path, res.status);
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
