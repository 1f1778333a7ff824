#include "ops/profiling_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace vgen {
namespace {

class ProfilingBackend final : public Backend {
 public:
  ProfilingBackend(std::shared_ptr<Backend> inner, bool by_shape)
      : owned_(std::move(inner)), inner_(owned_.get()), by_shape_(by_shape) {}
  ~ProfilingBackend() override { report(); }

  std::string name() const override { return inner_->name(); }
  bool supports(Op op, DType dtype) const override { return inner_->supports(op, dtype); }
  void activate() override { inner_->activate(); }
  DeviceRuntime& underlying() override { return inner_->underlying(); }
  std::string attention_kernel() const override { return inner_->attention_kernel(); }

  // Every op of the list, timed under its name; copies apart by direction (host transfers,
  // weight uploads while loading and results read back, are not device work).
#define VGEN_PROFILED_OP(name, ret, params, args, kind) \
  ret name params override {                                                                              \
    return timed(by_shape_ ? label(Op::name, args_device_hint args) + args_shapes args                      \
                           : std::string(label(Op::name, args_device_hint args)),                           \
                 [&] { return inner_->name args; });                                                         \
  }
  VGEN_OP_LIST(VGEN_PROFILED_OP)
#undef VGEN_PROFILED_OP
  void synchronize() override { inner_->synchronize(); }
  std::unique_ptr<CapturedWork> capture(const std::function<void()>&) override {
    fail("VGEN_PROFILE_OPS synchronizes around every op, so work cannot be recorded for replay");
  }

 private:
  struct Entry {
    double seconds = 0;
    long calls = 0;
  };

  // Times one call; nested calls (an op built from others) count only at the outer level.
  template <typename F>
  auto timed(const std::string& op, F&& f) -> decltype(f()) {
    if (depth_++ > 0) {
      struct Leave { int& d; ~Leave() { --d; } } leave{depth_};
      return f();
    }
    struct Leave { int& d; ~Leave() { --d; } } leave{depth_};
    inner_->synchronize();
    const auto t = std::chrono::steady_clock::now();
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      record(op, t);
    } else {
      auto r = f();
      record(op, t);
      return r;
    }
  }

  void record(const std::string& op, std::chrono::steady_clock::time_point t) {
    inner_->synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& e = entries_[op];
    e.seconds += s;
    ++e.calls;
  }

  void report() {
    std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (const auto& r : rows) total += r.second.seconds;
    std::fprintf(stderr, "vgen op profile (%s, synchronized per op): %.3f s\n", inner_->name().c_str(), total);
    for (const auto& [name, e] : rows) {
      const double share = total > 0 ? 100.0 * e.seconds / total : 0.0;
      if (by_shape_)
        std::fprintf(stderr, "  %9.4f s %5.1f%% %8ld calls  %s\n", e.seconds, share, e.calls, name.c_str());
      else
        std::fprintf(stderr, "  %-22s %9.4f s %5.1f%% %8ld calls\n", name.c_str(), e.seconds, share, e.calls);
    }
  }

  // The first tensor argument tells a copy's direction (copy(dst, src)); other ops ignore it.
  struct CopyEnds {
    const Tensor* dst = nullptr;
    const Tensor* src = nullptr;
  };
  template <typename... A>
  static CopyEnds args_device_hint(const A&... a) {
    CopyEnds e;
    auto take = [&](const auto& v) {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, Tensor>) {
        if (e.dst == nullptr) e.dst = &v;
        else if (e.src == nullptr) e.src = &v;
      }
    };
    (take(a), ...);
    return e;
  }
  // " DTYPE[shape]" for each defined tensor argument.
  template <typename... A>
  static std::string args_shapes(const A&... a) {
    std::string s;
    auto take = [&](const auto& v) {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, Tensor>) {
        if (v.defined()) s += " " + std::string(dtype_name(v.dtype())) + shape_str(v.shape());
      }
    };
    (take(a), ...);
    return s;
  }
  static const char* label(Op op, const CopyEnds& e) {
    if (op != Op::copy || e.dst == nullptr || e.src == nullptr) return op_name(op);
    const bool from_host = e.src->device().is_cpu(), to_host = e.dst->device().is_cpu();
    if (from_host == to_host) return "copy";  // within the device (all of the CPU backend's)
    return from_host ? "copy host->device" : "copy device->host";
  }

  std::shared_ptr<Backend> owned_;
  Backend* inner_;
  std::mutex mutex_;
  bool by_shape_;
  std::map<std::string, Entry> entries_;
  static thread_local int depth_;
};

thread_local int ProfilingBackend::depth_ = 0;

}  // namespace

std::shared_ptr<Backend> make_profiling_backend(std::shared_ptr<Backend> inner, bool by_shape) {
  return std::make_shared<ProfilingBackend>(std::move(inner), by_shape);
}

}  // namespace vgen
