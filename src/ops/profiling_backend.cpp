#include "ops/profiling_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace vgen {
namespace {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend* inner) : inner_(inner) {}
  ~ProfilingBackend() override { report(); }

  std::string name() const override { return inner_->name(); }
  void copy(const Tensor& d, const Tensor& s) override {
    // Host transfers (weight uploads while loading, results read back) apart from device copies.
    const char* op = s.device().is_cpu() ? "copy host->device" : d.device().is_cpu() ? "copy device->host" : "copy";
    timed(op, [&] { inner_->copy(d, s); });
  }
  void fill(const Tensor& d, float v) override { timed("fill", [&] { inner_->fill(d, v); }); }
  Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) override {
    return timed("binary", [&] { return inner_->binary(op, a, b); });
  }
  Tensor unary(UnaryOp op, const Tensor& x, float a, float b) override {
    return timed("unary", [&] { return inner_->unary(op, x, a, b); });
  }
  Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) override {
    return timed("axpby", [&] { return inner_->axpby(a, x, b, y); });
  }
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b, Activation act) override {
    return timed("linear", [&] { return inner_->linear(x, w, b, act); });
  }
  Tensor matmul(const Tensor& a, const Tensor& b) override { return timed("matmul", [&] { return inner_->matmul(a, b); }); }
  Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    return timed("layer_norm", [&] { return inner_->layer_norm(x, w, b, eps); });
  }
  Tensor rms_norm(const Tensor& x, const Tensor& w, float eps) override {
    return timed("rms_norm", [&] { return inner_->rms_norm(x, w, eps); });
  }
  Tensor channel_rms_norm(const Tensor& x, const Tensor& g, const Tensor& b, Activation act) override {
    return timed("channel_rms_norm", [&] { return inner_->channel_rms_norm(x, g, b, act); });
  }
  Tensor softmax(const Tensor& x) override { return timed("softmax", [&] { return inner_->softmax(x); }); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) override {
    return timed("attention", [&] { return inner_->attention(q, k, v, bias, scale); });
  }
  Tensor rope(const Tensor& x, const Tensor& c, const Tensor& s) override {
    return timed("rope", [&] { return inner_->rope(x, c, s); });
  }
  Tensor embedding(const Tensor& ids, const Tensor& t) override {
    return timed("embedding", [&] { return inner_->embedding(ids, t); });
  }
  Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv3dParams& p) override {
    return timed("conv3d", [&] { return inner_->conv3d(x, w, b, p); });
  }
  Tensor upsample_nearest2x(const Tensor& x) override {
    return timed("upsample_nearest2x", [&] { return inner_->upsample_nearest2x(x); });
  }
  double sum_abs(const Tensor& x) override { return timed("sum_abs", [&] { return inner_->sum_abs(x); }); }
  Tensor modulated_layer_norm(const Tensor& x, const Tensor& s, const Tensor& sh, float eps) override {
    return timed("modulated_layer_norm", [&] { return inner_->modulated_layer_norm(x, s, sh, eps); });
  }
  Tensor gated_residual(const Tensor& x, const Tensor& y, const Tensor& g) override {
    return timed("gated_residual", [&] { return inner_->gated_residual(x, y, g); });
  }
  Tensor rms_norm_rope(const Tensor& x, const Tensor& w, float eps, const Tensor& c, const Tensor& s) override {
    return timed("rms_norm_rope", [&] { return inner_->rms_norm_rope(x, w, eps, c, s); });
  }
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
  auto timed(const char* op, F&& f) -> decltype(f()) {
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

  void record(const char* op, std::chrono::steady_clock::time_point t) {
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
    for (const auto& [name, e] : rows)
      std::fprintf(stderr, "  %-22s %9.4f s %5.1f%% %8ld calls\n", name.c_str(), e.seconds,
                   total > 0 ? 100.0 * e.seconds / total : 0.0, e.calls);
  }

  Backend* inner_;
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  static thread_local int depth_;
};

thread_local int ProfilingBackend::depth_ = 0;

}  // namespace

std::unique_ptr<Backend> make_profiling_backend(Backend* inner) { return std::make_unique<ProfilingBackend>(inner); }

}  // namespace vgen
