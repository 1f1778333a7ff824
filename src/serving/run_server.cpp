// run_server: the process around a Server. Validates the engine config up front, then
// serves until SIGINT or SIGTERM.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "config/engine_config.h"
#include "core/error.h"
#include "media/mp4.h"
#include "pipelines/pipeline.h"
#include "serving/server.h"

namespace vgen::serving {
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
  EngineConfig config;
  if (!options.config_file.empty()) {
    config = load_engine_config(options.config_file);
    require_implemented(config, options.config_file);
  }
  if (config.attention.backend == AttentionBackend::Auto) ExecutionSettings::check_environment();
  // What can be known without loading fails here, before a media directory is made or the
  // port bound: an unusable device (--device cuda on a build or machine without one) or a
  // folder that is not a checkpoint. The load itself runs while /health answers 503; "listening"
  // is logged once it is done.
  resolve_device(options.device);
  if (!std::filesystem::is_regular_file(std::filesystem::path(options.model) / "model_index.json"))
    fail("{}: not a diffusers checkpoint folder (no model_index.json)", options.model);
  if (const std::string why = media::mp4_writer_problem(); !why.empty())
    spdlog::warn("{}: video requests will be refused until there is one", why);
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
