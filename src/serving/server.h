// `vgen serve`: the OpenAI-compatible HTTP server (the contract: shared/spec/openai-api.md).
//
//   GET  /health                      200 when the model is loaded, 503 while loading
//   GET  /metrics                     Prometheus text
//   GET  /v1/models, /v1/models/{id}
//   POST /v1/images/generations       one-frame generations, b64_json
//   POST /v1/images/edits             400 for models that cannot edit
//   POST /v1/videos                   async job -> Video object (status "queued")
//   GET  /v1/videos                   ?after=&limit=&order=
//   GET  /v1/videos/{id}              Video object + openai-poll-after-ms
//   GET  /v1/videos/{id}/content      ?variant=video|thumbnail
//   DELETE /v1/videos/{id}            cancels a queued or running job
//   POST /v1/videos/generations       synchronous: MP4 bytes
//
// One model instance, one worker thread: generations run one at a time in submission order
// from a bounded queue (429 when full). Video jobs live in a SQLite database in media_dir
// and their files in media_dir/videos/, so completed jobs survive restarts.
//
// The pieces: http_server (the HTTP transport: Boost.Beast, deadlines, body limits), http_message
// (request, response, multipart parsing), router (matching, 404/405/401/503), access (API key,
// Host/Origin, content type), routes_models /
// routes_images / routes_videos (the endpoints), job_runner (generations on the worker),
// media_dir, model_loading, server.cpp (the HTTP server's lifetime), run_server.cpp (signals).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "pipelines/pipeline.h"
#include "serving/model_loading.h"
#include "serving/requests.h"

namespace vgen::serving {

struct ServeOptions {
  std::string model;         // checkpoint folder in the diffusers layout
  std::string config_file;   // engine YAML (src/config); empty: defaults
  std::string host = "127.0.0.1";
  int port = 8000;           // 0: any free port (logged)
  std::string api_key;       // when set, /v1/* needs "Authorization: Bearer <api_key>"
  std::string media_dir;     // job database + media files; empty: "vgen-media" in the working directory
  std::string device = "auto";  // a GPU when one is usable, else the CPU
  std::string dtype;            // compute dtype; empty: bf16 on a GPU, fp32 on the CPU
  bool offload_text_encoder = false;  // free the text encoder between generations
  bool offload_idle_expert = false;   // two-expert models: the idle expert in host memory
  // LoRA adapters requests may name: the *.safetensors files of this folder, by file stem.
  std::string lora_dir;
  int lora_cached_variants = 1;  // merged variants of the transformer kept in memory (current counted)
  std::string served_model_name;  // the model's id in the API; empty: the checkpoint folder's name
  size_t max_queue = 64;          // generations waiting (async and sync); more is a 429
  size_t max_body_bytes = 32u << 20;  // larger request bodies are a 413 (chunked ones too)
  size_t max_connections = 256;       // requests handled at once (a thread each); more wait for one
  // A connection's request line and headers must arrive within header_timeout of its accept,
  // its body within body_timeout; an answer must be taken within write_timeout.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{120000};
  std::chrono::milliseconds write_timeout{120000};
};

class Server {
 public:
  // Takes media_dir (creating it; one server per media_dir at a time), opens the job store
  // and binds host:port. Throws vgen::Error naming what failed.
  Server(ServeOptions options, ModelLoader loader);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;
  // Serves until stop(), loading the model in the background (endpoints other than /health
  // and /metrics answer 503 until it is ready). Throws the loader's error when the model
  // fails to load.
  void run();
  // Thread-safe: cancels the running generation, drops queued ones, stops serving.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Validates options.config_file (unknown keys, bad values, and features not implemented yet
// are errors), then serves until SIGINT or SIGTERM. Returns 0 after a clean stop; throws
// vgen::Error when it cannot start (config, media_dir, port, model).
int run_server(const ServeOptions& options);

}  // namespace vgen::serving
