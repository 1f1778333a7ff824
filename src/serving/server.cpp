#include "serving/server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "config/engine_config.h"
#include "ops/ops.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "media/image.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "pipelines/registry.h"
#include "serving/api_error.h"
#include "serving/job_queue.h"
#include "serving/job_store.h"
#include "serving/metrics.h"
#include "serving/video_id.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace vgen::serving {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes a client sent (prompts, field names) may not be UTF-8; never let dump() throw on them.
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

// A client's string quoted in an error message: control bytes become '?', long ones are cut.
std::string printable(const std::string& s) {
  std::string out = s.substr(0, 200);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s.size() > 200 ? out + "..." : out;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e.status, e.what(), e.param, e.code));
  if (e.status == 429 || e.status == 503) res.set_header("retry-after", "1");
  // A failed generation is not transient: the SDK must not retry it.
  if (e.code == "generation_failed") res.set_header("x-should-retry", "false");
}

// The error body for statuses httplib answers on its own (malformed request, body too large).
void fill_default_error(httplib::Response& res) {
  std::string message;
  std::optional<std::string> code;
  switch (res.status) {
    case 400: message = "malformed HTTP request"; break;
    case 404: message = "unknown path"; code = "not_found"; break;
    case 413: message = "request body too large"; code = "request_too_large"; break;
    case 414: message = "request URI too long"; break;
    case 416: message = "requested range not satisfiable"; break;
    default: message = fmt::format("HTTP error {}", res.status);
  }
  send_json(res, res.status, error_body(res.status, message, std::nullopt, code));
}

RequestFields body_fields(const httplib::Request& req) {
  if (req.is_multipart_form_data()) {
    std::vector<FormPart> parts;
    for (const auto& [name, f] : req.files) parts.push_back({f.name, f.filename, f.content_type, f.content});
    return RequestFields::from_form(std::move(parts));
  }
  return RequestFields::from_json(req.body);
}

// 400 naming the first query parameter not in `accepted`.
void reject_unknown_query(const httplib::Request& req, const std::set<std::string>& accepted) {
  for (const auto& [name, value] : req.params)
    if (!accepted.count(name)) bad_field(name, fmt::format("unknown query parameter '{}'", printable(name)));
}

std::string checked_video_id(const std::string& id) {
  if (!is_valid_video_id(id))
    bad_field("video_id", fmt::format("invalid video id '{}' (expected 'video_' and 16 to 64 letters or digits)",
                                      printable(id)));
  return id;
}

json video_json(const VideoJob& j) {
  json v = {{"id", j.id},
            {"object", "video"},
            {"created_at", j.created_at},
            {"completed_at", nullptr},
            {"expires_at", nullptr},
            {"status", j.status},
            {"progress", j.progress},
            {"model", j.model},
            {"seconds", j.seconds},
            {"size", j.size},
            {"prompt", j.prompt},
            {"remixed_from_video_id", nullptr},
            {"error", nullptr}};
  if (j.completed_at) v["completed_at"] = *j.completed_at;
  if (j.error_code) v["error"] = {{"code", *j.error_code}, {"message", j.error_message.value_or("")}};
  for (auto it = j.params.begin(); it != j.params.end(); ++it)
    if (!v.contains(it.key())) v[it.key()] = it.value();
  return v;
}

std::string model_id_for(const ServeOptions& options) {
  if (!options.served_model_name.empty()) return options.served_model_name;
  fs::path p(options.model);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

using Params = std::vector<std::string>;  // the {placeholder} path segments, in order
using Handler = std::function<void(const httplib::Request&, httplib::Response&, const Params&)>;

struct Route {
  std::string pattern;  // "/v1/videos/{id}": the metrics label
  bool open = false;    // no API key, answers while the model loads
  std::vector<std::pair<std::string, Handler>> methods;
};

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

// Matches `path` against a pattern; fills the placeholders.
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

// Compares without an early exit, so response times do not reveal a matching prefix.
bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Closes a file descriptor (and so releases its flock) on scope exit.
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

ServedModel load_served_model(const ServeOptions& options) {
  const DiffusersCheckpoint checkpoint = DiffusersCheckpoint::open(options.model);
  const PipelineEntry& entry = find_pipeline(checkpoint);
  PipelineOptions pipeline_options = default_pipeline_options(resolve_device(options.device));
  if (!options.dtype.empty()) pipeline_options.dtype = parse_compute_dtype(options.dtype);
  pipeline_options.offload_text_encoder = options.offload_text_encoder;
  // A server decodes many videos: autotuned convolutions repay their first-call cost.
  EngineConfig config;
  if (!options.config_file.empty()) {
    config = load_engine_config(options.config_file);
    require_implemented(config, options.config_file);
    pipeline_options.cuda_graphs = config.cuda_graph.enabled;
  }
  ServedModel m;
  m.pipeline = entry.load(checkpoint, pipeline_options);
  m.info.id = model_id_for(options);
  m.info.task = entry.task;
  // fps and frame_grid keep ModelInfo's defaults (Wan: 16 fps, 4k+1 frames): the pipeline
  // interface does not report them.
  return m;
}

struct Server::Impl {
  ServeOptions options;
  ModelLoader loader;
  fs::path media_dir;
  fs::path videos_dir;
  FileDescriptor lock;
  std::unique_ptr<JobStore> store;
  Metrics metrics;
  ServedModel model;  // set once by the loader thread before `ready`
  int64_t model_created = 0;
  std::atomic<bool> ready{false};
  std::exception_ptr load_error;
  std::thread loader_thread;
  JobQueue queue;  // declared after `model` and `store`: its worker, which uses them, is joined first
  httplib::Server http;
  std::vector<Route> routes;
  int port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<bool> listening{false};
  std::atomic<bool> listen_done{false};

  Impl(ServeOptions o, ModelLoader l);
  ~Impl();

  void take_media_dir();
  void sweep_media();
  void setup_http();
  void run();
  void stop();

  void dispatch(const httplib::Request& req, httplib::Response& res);
  const Route* find_route(const std::string& path, Params& params) const;
  bool authorized(const httplib::Request& req) const;
  int poll_after_ms() const;

  std::string video_path(const std::string& id) const { return (videos_dir / (id + ".mp4")).string(); }
  std::string thumbnail_path(const std::string& id) const {
    return (videos_dir / (id + ".thumbnail.webp")).string();
  }
  void remove_media(const std::string& id) const {
    std::error_code ec;
    fs::remove(video_path(id), ec);
    fs::remove(thumbnail_path(id), ec);
  }

  GenerationOutput generate(const GenerationParams& params, const std::atomic<bool>& cancelled,
                            const std::function<void(const StepProgress&)>& on_step = {});
  void run_video_job(const std::string& id, const VideoPlan& plan, const std::atomic<bool>& cancelled);
  // Runs `work` on the worker and waits for its result (sync endpoints).
  template <typename T>
  T run_sync(const std::function<T(const std::atomic<bool>&)>& work);

  void health(const httplib::Request&, httplib::Response&, const Params&);
  void prometheus(const httplib::Request&, httplib::Response&, const Params&);
  void list_models(const httplib::Request&, httplib::Response&, const Params&);
  void get_model(const httplib::Request&, httplib::Response&, const Params&);
  void images(const httplib::Request&, httplib::Response&, const Params&, bool edit);
  void create_video(const httplib::Request&, httplib::Response&, const Params&);
  void generate_video_sync(const httplib::Request&, httplib::Response&, const Params&);
  void list_videos(const httplib::Request&, httplib::Response&, const Params&);
  void get_video(const httplib::Request&, httplib::Response&, const Params&);
  void get_video_content(const httplib::Request&, httplib::Response&, const Params&);
  void delete_video(const httplib::Request&, httplib::Response&, const Params&);
};

Server::Impl::Impl(ServeOptions o, ModelLoader l)
    : options(std::move(o)), loader(std::move(l)), queue(options.max_queue) {
  VGEN_CHECK(options.max_queue > 0, "max_queue must be at least 1");
  media_dir = options.media_dir.empty() ? fs::path("vgen-media") : fs::path(options.media_dir);
  videos_dir = media_dir / "videos";
  take_media_dir();
  store = std::make_unique<JobStore>((media_dir / "vgen.db").string());
  if (store->interrupted_jobs() > 0)
    spdlog::warn("{} job(s) were unfinished when the previous server stopped; marked failed (server_restarted)",
                 store->interrupted_jobs());
  sweep_media();
  setup_http();
  const bool bound = options.port == 0 ? (port = http.bind_to_any_port(options.host)) > 0
                                       : http.bind_to_port(options.host, options.port);
  if (options.port != 0) port = options.port;
  if (!bound) fail("cannot listen on {}:{} (address in use, or not an address of this host)", options.host, options.port);
}

Server::Impl::~Impl() {
  stop();
  if (loader_thread.joinable()) loader_thread.join();
}

void Server::Impl::take_media_dir() {
  std::error_code ec;
  fs::create_directories(videos_dir, ec);
  if (ec) fail("{}: cannot create the media directory: {}", videos_dir.string(), ec.message());
  const std::string lock_path = (media_dir / "vgen.lock").string();
  lock.fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock.fd < 0) fail("{}: cannot open: {}", lock_path, std::strerror(errno));
  // The lock dies with the process (even kill -9), so a restart never finds it stale.
  if (::flock(lock.fd, LOCK_EX | LOCK_NB) != 0)
    fail("{}: the media directory is in use by another vgen server", media_dir.string());
}

// Temporary files of an interrupted write, and files of jobs that no longer exist (deleted
// while being written, or in a crash), are removed.
void Server::Impl::sweep_media() {
  const std::vector<std::string> ids = store->ids();
  const std::set<std::string> known(ids.begin(), ids.end());
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(videos_dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string id = name.substr(0, name.find('.'));
    if (name.find(".tmp-") != std::string::npos || !known.count(id)) {
      spdlog::info("removing stale media file {}", e.path().string());
      fs::remove(e.path(), ec);
    }
  }
}

void Server::Impl::setup_http() {
  const auto bind = [this](void (Impl::*f)(const httplib::Request&, httplib::Response&, const Params&)) -> Handler {
    return [this, f](const httplib::Request& req, httplib::Response& res, const Params& p) { (this->*f)(req, res, p); };
  };
  routes = {
      {"/health", true, {{"GET", bind(&Impl::health)}}},
      {"/metrics", true, {{"GET", bind(&Impl::prometheus)}}},
      {"/v1/models", false, {{"GET", bind(&Impl::list_models)}}},
      {"/v1/models/{model}", false, {{"GET", bind(&Impl::get_model)}}},
      {"/v1/images/generations",
       false,
       {{"POST", [this](const httplib::Request& q, httplib::Response& r, const Params& p) { images(q, r, p, false); }}}},
      {"/v1/images/edits",
       false,
       {{"POST", [this](const httplib::Request& q, httplib::Response& r, const Params& p) { images(q, r, p, true); }}}},
      {"/v1/videos", false, {{"GET", bind(&Impl::list_videos)}, {"POST", bind(&Impl::create_video)}}},
      // Before /v1/videos/{id}: "generations" is not an id.
      {"/v1/videos/generations", false, {{"POST", bind(&Impl::generate_video_sync)}}},
      {"/v1/videos/{id}", false, {{"GET", bind(&Impl::get_video)}, {"DELETE", bind(&Impl::delete_video)}}},
      {"/v1/videos/{id}/content", false, {{"GET", bind(&Impl::get_video_content)}}},
  };

  // Sync requests hold a thread while they wait in the queue: enough threads that polls and
  // health checks still get one when the queue is full.
  const size_t threads = std::max<size_t>(32, options.max_queue + 32);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options.max_body_bytes);
  const auto handler = [this](const httplib::Request& req, httplib::Response& res) { dispatch(req, res); };
  http.Get(".*", handler);
  http.Post(".*", handler);
  http.Put(".*", handler);
  http.Patch(".*", handler);
  http.Delete(".*", handler);
  http.Options(".*", handler);
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) fill_default_error(res);
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body(500, "internal server error", std::nullopt, "internal_error"));
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    Params ignored;
    const Route* route = find_route(req.path, ignored);
    metrics.count_request(route ? route->pattern : "(unknown)", req.method, res.status);
    spdlog::debug("{} {} -> {}", req.method, req.path, res.status);
  });
}

void Server::Impl::run() {
  loader_thread = std::thread([this] {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      model = loader();
      model_created = unix_now();
      queue.start();
      ready = true;
      spdlog::info("model '{}' ({}, {}) ready in {:.1f} s", model.info.id, model.pipeline->class_name(),
                   model.info.task, seconds_since(t0));
    } catch (const std::exception& e) {
      load_error = std::current_exception();
      spdlog::error("cannot load the model: {}", e.what());
      stop();
    }
  });
  // Dekker-style handshake with stop(): either stop() sees `listening`, or this sees `stopping`.
  listening = true;
  if (!stopping) {
    spdlog::info("listening on http://{}:{}", options.host, port);
    http.listen_after_bind();
  }
  listen_done = true;
  queue.shutdown();
  loader_thread.join();
  if (load_error) std::rethrow_exception(load_error);
}

void Server::Impl::stop() {
  stopping = true;
  queue.shutdown();
  // httplib's stop() only acts once listening has begun.
  while (listening && !listen_done && !http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http.stop();
}

const Route* Server::Impl::find_route(const std::string& path, Params& params) const {
  for (const Route& r : routes)
    if (match_route(r.pattern, path, params)) return &r;
  return nullptr;
}

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (options.api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) return false;
  return constant_time_equal(header.substr(kBearer.size()), options.api_key);
}

// How long clients should wait between polls: about one denoising step, within [100 ms, 2 s].
int Server::Impl::poll_after_ms() const {
  const double step_ms = metrics.mean_step_seconds() * 1000.0;
  if (step_ms <= 0) return 500;
  return static_cast<int>(std::clamp(step_ms, 100.0, 2000.0));
}

void Server::Impl::dispatch(const httplib::Request& req, httplib::Response& res) {
  try {
    Params params;
    const Route* route = find_route(req.path, params);
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
      throw ApiError(405, fmt::format("method {} is not allowed on {} (allowed: {})", req.method, route->pattern, allow),
                     std::nullopt, "method_not_allowed");
    }
    if (!route->open && !authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      throw ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'", std::nullopt,
                     "invalid_api_key");
    }
    if (!route->open && !ready) throw ApiError(503, "the model is still loading; retry shortly", std::nullopt, "model_loading");
    (*handler)(req, res, params);
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", req.method, req.path, e.what());
    send_json(res, 500, error_body(500, fmt::format("internal error: {}", e.what()), std::nullopt, "internal_error"));
  } catch (...) {
    send_json(res, 500, error_body(500, "internal error", std::nullopt, "internal_error"));
  }
}

GenerationOutput Server::Impl::generate(const GenerationParams& params, const std::atomic<bool>& cancelled,
                                        const std::function<void(const StepProgress&)>& on_step) {
  return model.pipeline->generate(params, [&](const StepProgress& p) {
    metrics.observe_step(p.step_seconds);
    if (on_step) on_step(p);
    return !cancelled.load();
  });
}

void Server::Impl::run_video_job(const std::string& id, const VideoPlan& plan, const std::atomic<bool>& cancelled) {
  if (!store->set_in_progress(id)) return;  // deleted while queued
  const auto t0 = std::chrono::steady_clock::now();
  spdlog::info("{}: started ({} {}x{}x{}, {} steps)", id, model.info.id, plan.resolved.width, plan.resolved.height,
               plan.resolved.num_frames, plan.resolved.num_inference_steps);
  try {
    GenerationOutput out = generate(plan.params, cancelled, [&](const StepProgress& p) {
      // 100 means "done", which includes encoding: denoising goes up to 99.
      store->set_progress(id, std::min(99, p.total > 0 ? 100 * p.step / p.total : 0));
    });
    if (cancelled) throw Cancelled();
    media::VideoEncodeOptions encode;
    encode.fps = plan.fps;
    media::write_mp4(video_path(id), out.frames, encode);
    media::write_file_atomic(thumbnail_path(id), media::encode_image(out.frames.select(0, 0), media::ImageFormat::WEBP));
    if (!store->set_completed(id, unix_now())) {
      remove_media(id);  // deleted while it was being written
      return;
    }
    metrics.count_generation("video", "completed", seconds_since(t0));
    spdlog::info("{}: completed in {:.2f} s", id, seconds_since(t0));
  } catch (const std::exception& e) {
    if (cancelled) {
      // Deleted (its row is gone) or shutting down (the next start marks it failed).
      remove_media(id);
      metrics.count_generation("video", "cancelled", seconds_since(t0));
      spdlog::info("{}: cancelled", id);
      return;
    }
    store->set_failed(id, "generation_failed", e.what(), unix_now());
    metrics.count_generation("video", "failed", seconds_since(t0));
    spdlog::error("{}: failed: {}", id, e.what());
  }
}

template <typename T>
T Server::Impl::run_sync(const std::function<T(const std::atomic<bool>&)>& work) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> result = promise->get_future();
  // The queue item holds the only reference, so dropping it unrun breaks the promise.
  const bool queued = queue.submit("", [promise = std::move(promise), work](const std::atomic<bool>& cancelled) {
    try {
      promise->set_value(work(cancelled));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (!queued)
    throw ApiError(429, fmt::format("the generation queue is full ({} waiting); retry later", options.max_queue),
                   std::nullopt, "queue_full");
  try {
    return result.get();
  } catch (const Cancelled&) {
    throw ApiError(503, "the server is shutting down", std::nullopt, "server_shutting_down");
  } catch (const std::future_error&) {
    throw ApiError(503, "the server is shutting down", std::nullopt, "server_shutting_down");
  } catch (const ApiError&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError(500, fmt::format("generation failed: {}", e.what()), std::nullopt, "generation_failed");
  }
}

void Server::Impl::health(const httplib::Request&, httplib::Response& res, const Params&) {
  if (!ready) {
    json body = error_body(503, "the model is still loading", std::nullopt, "model_loading");
    body["status"] = "loading";
    send_json(res, 503, body);
    res.set_header("retry-after", "1");
    return;
  }
  send_json(res, 200, {{"status", "ok"}, {"model", model.info.id}});
}

void Server::Impl::prometheus(const httplib::Request&, httplib::Response& res, const Params&) {
  Metrics::Gauges g;
  g.queue_depth = queue.queued();
  g.job_running = queue.running();
  g.model_ready = ready;
  g.jobs_by_status = store->count_by_status();
  res.set_content(metrics.render(g), "text/plain; version=0.0.4; charset=utf-8");
}

void Server::Impl::list_models(const httplib::Request&, httplib::Response& res, const Params&) {
  const json m = {{"id", model.info.id}, {"object", "model"}, {"created", model_created}, {"owned_by", "vgen"}};
  send_json(res, 200, {{"object", "list"}, {"data", json::array({m})}});
}

void Server::Impl::get_model(const httplib::Request&, httplib::Response& res, const Params& p) {
  if (p[0] != model.info.id)
    throw ApiError(404, fmt::format("model '{}' is not served here (this server serves '{}')", p[0], model.info.id),
                   "model", "model_not_found");
  send_json(res, 200, {{"id", model.info.id}, {"object", "model"}, {"created", model_created}, {"owned_by", "vgen"}});
}

void Server::Impl::images(const httplib::Request& req, httplib::Response& res, const Params&, bool edit) {
  const ImagePlan plan = plan_image(parse_image_request(body_fields(req), edit), model.info, *model.pipeline);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> images;
  try {
    images = run_sync<std::vector<std::string>>([this, &plan](const std::atomic<bool>& cancelled) {
      std::vector<std::string> out;
      for (int i = 0; i < plan.n; ++i) {
        GenerationParams p = plan.params;
        p.seed = plan.params.seed + static_cast<uint64_t>(i);
        const GenerationOutput g = generate(p, cancelled);
        out.push_back(base64(media::encode_image(g.frames.select(0, 0), plan.output_format, plan.quality)));
      }
      return out;
    });
  } catch (const ApiError& e) {
    if (e.status == 500) metrics.count_generation("image", "failed", seconds_since(t0));
    throw;
  }
  metrics.count_generation("image", "completed", seconds_since(t0));
  json data = json::array();
  for (std::string& b64 : images) data.push_back({{"b64_json", std::move(b64)}, {"revised_prompt", nullptr}});
  send_json(res, 200,
            {{"created", unix_now()},
             {"data", data},
             {"size", plan.size},
             {"output_format", std::string(media::image_format_name(plan.output_format))}});
}

void Server::Impl::create_video(const httplib::Request& req, httplib::Response& res, const Params&) {
  const VideoPlan plan = plan_video(parse_video_request(body_fields(req)), model.info, *model.pipeline);
  VideoJob job;
  job.id = new_video_id();
  job.created_at = unix_now();
  job.model = model.info.id;
  job.prompt = plan.params.prompt;
  job.seconds = plan.seconds;
  job.size = plan.size;
  job.params = plan.extras();
  store->insert(job);
  const std::string id = job.id;
  if (!queue.submit(id, [this, id, plan](const std::atomic<bool>& cancelled) { run_video_job(id, plan, cancelled); })) {
    store->remove(id);
    throw ApiError(429, fmt::format("the generation queue is full ({} waiting); retry later", options.max_queue),
                   std::nullopt, "queue_full");
  }
  spdlog::info("{}: queued", id);
  send_json(res, 200, video_json(job));
}

void Server::Impl::generate_video_sync(const httplib::Request& req, httplib::Response& res, const Params&) {
  const VideoPlan plan = plan_video(parse_video_request(body_fields(req)), model.info, *model.pipeline);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> mp4;
  try {
    mp4 = run_sync<std::vector<uint8_t>>([this, &plan](const std::atomic<bool>& cancelled) {
      const GenerationOutput out = generate(plan.params, cancelled);
      media::VideoEncodeOptions encode;
      encode.fps = plan.fps;
      return media::encode_mp4(out.frames, encode);
    });
  } catch (const ApiError& e) {
    if (e.status == 500) metrics.count_generation("video_sync", "failed", seconds_since(t0));
    throw;
  }
  metrics.count_generation("video_sync", "completed", seconds_since(t0));
  res.status = 200;
  res.set_content(std::string(mp4.begin(), mp4.end()), "video/mp4");
}

void Server::Impl::list_videos(const httplib::Request& req, httplib::Response& res, const Params&) {
  reject_unknown_query(req, {"after", "limit", "order"});
  std::optional<std::string> after;
  if (req.has_param("after")) after = checked_video_id(req.get_param_value("after"));
  int limit = 20;
  if (req.has_param("limit")) {
    const std::string s = req.get_param_value("limit");
    if (s.empty() || s.size() > 3 || s.find_first_not_of("0123456789") != std::string::npos || std::stoi(s) < 1 ||
        std::stoi(s) > 100)
      bad_field("limit", fmt::format("'limit' must be an integer in [1, 100], got '{}'", s));
    limit = std::stoi(s);
  }
  bool descending = true;
  if (req.has_param("order")) {
    const std::string s = req.get_param_value("order");
    if (s != "asc" && s != "desc") bad_field("order", fmt::format("'order' must be 'asc' or 'desc', got '{}'", s));
    descending = s == "desc";
  }
  const std::optional<JobPage> page = store->list(after, limit, descending);
  if (!page) throw ApiError(404, fmt::format("no video with id '{}' (after)", *after), "after", "not_found");
  json data = json::array();
  for (const VideoJob& j : page->data) data.push_back(video_json(j));
  json body = {{"object", "list"}, {"data", data}, {"has_more", page->has_more}, {"first_id", nullptr},
               {"last_id", nullptr}};
  if (!page->data.empty()) {
    body["first_id"] = page->data.front().id;
    body["last_id"] = page->data.back().id;
  }
  send_json(res, 200, body);
}

void Server::Impl::get_video(const httplib::Request& req, httplib::Response& res, const Params& p) {
  reject_unknown_query(req, {});
  const std::optional<VideoJob> job = store->get(checked_video_id(p[0]));
  if (!job) throw ApiError(404, fmt::format("no video with id '{}'", p[0]), "video_id", "not_found");
  send_json(res, 200, video_json(*job));
  if (job->status == "queued" || job->status == "in_progress")
    res.set_header("openai-poll-after-ms", std::to_string(poll_after_ms()));
}

void Server::Impl::get_video_content(const httplib::Request& req, httplib::Response& res, const Params& p) {
  reject_unknown_query(req, {"variant"});
  const std::string id = checked_video_id(p[0]);
  const std::string variant = req.has_param("variant") ? req.get_param_value("variant") : "video";
  if (variant == "spritesheet") bad_field("variant", "variant 'spritesheet' is not supported (use video or thumbnail)");
  if (variant != "video" && variant != "thumbnail")
    bad_field("variant", fmt::format("'variant' must be 'video' or 'thumbnail', got '{}'", variant));
  const std::optional<VideoJob> job = store->get(id);
  if (!job) throw ApiError(404, fmt::format("no video with id '{}'", id), "video_id", "not_found");
  if (job->status == "failed") {
    res.set_header("x-should-retry", "false");
    throw ApiError(409, fmt::format("video {} failed ({}): {}", id, job->error_code.value_or(""),
                                    job->error_message.value_or("")),
                   std::nullopt, "video_failed");
  }
  if (job->status != "completed")
    throw ApiError(409, fmt::format("video {} is not ready (status {}, progress {}%)", id, job->status, job->progress),
                   std::nullopt, "video_not_ready");
  const std::string path = variant == "video" ? video_path(id) : thumbnail_path(id);
  std::vector<uint8_t> bytes;
  try {
    bytes = media::read_file(path);
  } catch (const Error&) {
    throw ApiError(404, fmt::format("the {} of video {} is gone from the media directory", variant, id), std::nullopt,
                   "content_missing");
  }
  res.status = 200;
  res.set_content(std::string(bytes.begin(), bytes.end()), variant == "video" ? "video/mp4" : "image/webp");
}

void Server::Impl::delete_video(const httplib::Request& req, httplib::Response& res, const Params& p) {
  reject_unknown_query(req, {});
  const std::string id = checked_video_id(p[0]);
  if (!store->get(id)) throw ApiError(404, fmt::format("no video with id '{}'", id), "video_id", "not_found");
  if (queue.cancel(id)) spdlog::info("{}: cancel requested", id);
  store->remove(id);
  remove_media(id);
  send_json(res, 200, {{"id", id}, {"object", "video.deleted"}, {"deleted", true}});
}

Server::Server(ServeOptions options, ModelLoader loader)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(loader))) {}

Server::~Server() = default;

int Server::port() const { return impl_->port; }

void Server::run() { impl_->run(); }

void Server::stop() { impl_->stop(); }

namespace {

// SIGINT/SIGTERM -> one byte on a pipe that a watcher thread reads. A handler (rather than
// sigwait with the signals blocked) because threads started before run_server, such as
// OpenBLAS's pool, would otherwise still receive the signal and take the process down.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const char byte = static_cast<char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
}

}  // namespace

int run_server(const ServeOptions& options) {
  if (!options.config_file.empty()) {
    const EngineConfig config = load_engine_config(options.config_file);
    require_implemented(config, options.config_file);
  }
  Server server(options, [options] { return load_served_model(options); });

  if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) fail("cannot create a pipe: {}", std::strerror(errno));
  struct sigaction action {}, previous_int{}, previous_term{};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_int);
  sigaction(SIGTERM, &action, &previous_term);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    pollfd fd{g_signal_pipe[0], POLLIN, 0};
    while (!done) {
      char sig = 0;
      if (::poll(&fd, 1, 200) > 0 && ::read(g_signal_pipe[0], &sig, 1) == 1) {
        spdlog::info("{}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
        server.stop();
        return;
      }
    }
  });
  const auto cleanup = [&] {
    done = true;
    watcher.join();
    sigaction(SIGINT, &previous_int, nullptr);
    sigaction(SIGTERM, &previous_term, nullptr);
    ::close(g_signal_pipe[0]);
    ::close(g_signal_pipe[1]);
    g_signal_pipe[0] = g_signal_pipe[1] = -1;
  };
  try {
    server.run();
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  return 0;
}

}  // namespace vgen::serving
