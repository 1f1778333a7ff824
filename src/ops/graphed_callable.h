// Replays a fixed-shape function of GPU tensors from a recorded graph (CUDA graphs), as
// PyTorch's make_graphed_callables does for a module: the denoising step runs the same
// shapes every step, so its hundreds of kernel launches can be issued as one.
//
// For each distinct set of input layouts (and `params`), the first call copies the inputs
// into static buffers and runs the function eagerly on them: its lazy set-up (kernel plans,
// workspaces, tables) happens then, outside any recording. The second call records the
// function on those buffers; it and later calls copy the inputs in, replay, and return a copy
// of the static output. The function must read its inputs only on the device, never on the
// host, and must not depend on anything but the inputs, `params` and fixed state (weights).
//
// When a backend cannot record (the CPU, VGEN_PROFILE_OPS) the function simply runs. When a
// recording fails, a warning says why and every later call runs eagerly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ops/backend.h"

namespace vgen {

class GraphedCallable {
 public:
  using Fn = std::function<Tensor(const std::vector<Tensor>& inputs, const std::vector<int64_t>& params)>;

  // `what` names the function in messages; at most `max_graphs` recordings are kept (the
  // least recently used one is dropped), since each holds its own working memory.
  GraphedCallable(std::string what, Fn fn, size_t max_graphs = 2);
  ~GraphedCallable();

  Tensor operator()(const std::vector<Tensor>& inputs, const std::vector<int64_t>& params = {});

  void set_enabled(bool enabled);
  // Drops every recording: the function's fixed state moved (e.g. weights uploaded anew), so
  // the recorded addresses are stale.
  void clear();
  bool enabled() const { return enabled_; }
  // How many graph launches and recordings were made (for tests and logs).
  int64_t replays() const { return replays_; }
  int64_t captures() const { return captures_; }

 private:
  struct Entry {
    std::vector<int64_t> key;
    std::vector<Tensor> inputs;  // static, contiguous
    Tensor output;               // static, written by the replay
    std::unique_ptr<CapturedWork> graph;
    uint64_t last_use = 0;
  };

  Entry* find(const std::vector<int64_t>& key);
  Entry& add(std::vector<int64_t> key, const std::vector<Tensor>& inputs);

  std::string what_;
  Fn fn_;
  size_t max_graphs_;
  bool enabled_ = true;
  bool failed_ = false;
  uint64_t clock_ = 0;
  int64_t replays_ = 0, captures_ = 0;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace vgen
