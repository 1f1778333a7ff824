#include "cli/launch.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace vgen::cli {
namespace {

// A TCP port that is free now (bound to port 0, read back, released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  VGEN_CHECK(fd >= 0, "vgen launch: socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  VGEN_CHECK(ok, "vgen launch: no free port: {}", std::strerror(errno));
  return ntohs(addr.sin_port);
}

int parse_int(const std::string& flag, const std::string& text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  VGEN_CHECK(!text.empty() && *end == '\0' && v >= lo && v <= hi, "vgen launch: {} must be an integer in [{}, {}], got '{}'",
             flag, lo, hi, text);
  return static_cast<int>(v);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

}  // namespace

int run_launch(int argc, char** argv) {
  int n = 0, port = 0;
  std::string addr = "127.0.0.1";
  int i = 0;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-h" || a == "--help") {
      std::printf(
          "Usage: vgen launch -n N [--master-addr ADDR] [--master-port PORT] -- COMMAND [ARGS...]\n"
          "Runs N vgen processes, one per GPU (rank r on GPU r), with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and\n"
          "MASTER_PORT set as torchrun sets them, e.g.\n"
          "  vgen launch -n 4 -- generate --model M --prompt P --cfg-size 2 --ulysses-size 2\n"
          "Rank 0 reports and writes the output. When a rank fails the others are stopped and vgen launch exits 1.\n"
          "  -n, --nproc N        processes (GPUs), 1 to 64\n"
          "  --master-addr ADDR   where rank 0 hands the others the NCCL id (default 127.0.0.1)\n"
          "  --master-port PORT   its TCP port (default: a free one)\n");
      return 0;
    }
    VGEN_CHECK(i + 1 < argc, "vgen launch: {} needs a value (vgen launch --help)", a);
    if (a == "-n" || a == "--nproc" || a == "--nproc-per-node") n = parse_int(a, argv[++i], 1, 64);
    else if (a == "--master-port") port = parse_int(a, argv[++i], 1, 65535);
    else if (a == "--master-addr") addr = argv[++i];
    else fail("vgen launch: unknown option '{}' (vgen launch --help)", a);
  }
  VGEN_CHECK(n > 0, "vgen launch: give the number of processes, -n N (vgen launch --help)");
  VGEN_CHECK(i < argc, "vgen launch: no command after '--' (e.g. vgen launch -n {} -- generate ...)", n);
  VGEN_CHECK(std::string(argv[i]) != "launch", "vgen launch: the command cannot be launch itself");
  if (port == 0) port = free_port();

  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  VGEN_CHECK(len > 0, "vgen launch: cannot find the vgen program (/proc/self/exe): {}", std::strerror(errno));
  self[len] = '\0';
  std::vector<char*> child_argv = {self};
  for (int k = i; k < argc; ++k) child_argv.push_back(argv[k]);
  child_argv.push_back(nullptr);

  std::vector<pid_t> pids(n, -1);
  for (int rank = 0; rank < n; ++rank) {
    const pid_t pid = ::fork();
    VGEN_CHECK(pid >= 0, "vgen launch: fork: {}", std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::execv(self, child_argv.data());
      std::fprintf(stderr, "vgen launch: rank %d: cannot run %s: %s\n", rank, self, std::strerror(errno));
      std::_Exit(127);
    }
    pids[rank] = pid;
  }

  int running = n, failed_rank = -1, failed_status = 0;
  auto rank_of = [&](pid_t pid) {
    for (int r = 0; r < n; ++r)
      if (pids[r] == pid) return r;
    return -1;
  };
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const int r = rank_of(pid);
    if (r < 0) continue;
    pids[r] = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && failed_rank < 0) {
      failed_rank = r;
      failed_status = status;
      std::fprintf(stderr, "vgen launch: rank %d %s; stopping the other %d rank(s)\n", r, describe(status).c_str(),
                   running);
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGTERM);
      // Those that do not stop within 10 s are killed.
      std::thread([pids, n] {
        std::this_thread::sleep_for(std::chrono::seconds(10));
        for (int k = 0; k < n; ++k)
          if (pids[k] > 0) ::kill(pids[k], SIGKILL);
      }).detach();
    }
  }
  if (failed_rank >= 0) {
    std::fprintf(stderr, "error: vgen launch: rank %d of %d %s\n", failed_rank, n, describe(failed_status).c_str());
    return 1;
  }
  return 0;
}

}  // namespace vgen::cli
