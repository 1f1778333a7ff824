#include "core/communicator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace vgen {
namespace {

Shape with_leading(int64_t n, const Shape& shape) {
  Shape s{n};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

Tensor copy_of(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  out.copy_(x);
  return out;
}

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string kind() const override { return "single"; }
  Tensor all_gather(const Tensor& x) override { return copy_of(x).view(with_leading(1, x.shape())); }
  Tensor all_to_all(const Tensor& x) override {
    VGEN_CHECK(x.dim() >= 1 && x.size(0) == 1, "all_to_all: {} must be [1, ...] on one rank", x.str());
    return copy_of(x);
  }
  Tensor send_recv(const Tensor& x, int dst, int src) override {
    VGEN_CHECK(dst == 0 && src == 0, "send_recv: rank {} / {} out of a communicator of 1", dst, src);
    return copy_of(x);
  }
  void broadcast(const Tensor& x, int root) override {
    VGEN_CHECK(root == 0, "broadcast: root {} out of a communicator of 1", root);
  }
  void barrier() override {}
  std::shared_ptr<Communicator> split(int, int) override { return std::make_shared<SingleCommunicator>(); }
};

struct ThreadShared;

// A failed rank's mark, shared by a group and every group split from it: a rank waiting in
// any of them wakes up and fails.
struct AbortState {
  std::mutex mutex;
  std::atomic<bool> aborted{false};
  std::string reason;
  std::vector<std::weak_ptr<ThreadShared>> groups;
};

// The state the threads of one group share: a generation barrier and one published buffer
// per rank (valid between the two barriers of a collective).
struct ThreadShared {
  ThreadShared(int n, std::shared_ptr<AbortState> a)
      : size(n), slots(n), shapes(n), dtypes(n), split_requests(n), abort(std::move(a)) {}
  const int size;
  std::mutex mutex;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<const void*> slots;
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  std::vector<std::pair<int, int>> split_requests;  // (color, key)
  std::map<int, std::shared_ptr<ThreadShared>> split_groups;  // by color, during a split
  std::shared_ptr<AbortState> abort;
};

std::shared_ptr<ThreadShared> make_group(int n, std::shared_ptr<AbortState> abort) {
  auto group = std::make_shared<ThreadShared>(n, abort);
  std::lock_guard<std::mutex> lock(abort->mutex);
  abort->groups.push_back(group);
  return group;
}

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<ThreadShared> shared, int rank) : shared_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return shared_->size; }
  std::string kind() const override { return "threads"; }

  void abort(const std::string& why) {
    AbortState& a = *shared_->abort;
    std::vector<std::shared_ptr<ThreadShared>> groups;
    {
      std::lock_guard<std::mutex> lock(a.mutex);
      if (!a.aborted) {
        a.reason = fmt::format("rank {} failed: {}", rank_, why);
        a.aborted = true;
      }
      for (const auto& g : a.groups)
        if (auto locked = g.lock()) groups.push_back(locked);
    }
    // Wake the waiters of every group (taking each group's mutex orders the wake-up after
    // their check of the flag).
    for (const auto& g : groups) {
      std::lock_guard<std::mutex> lock(g->mutex);
      g->cv.notify_all();
    }
  }

  void barrier() override {
    std::unique_lock<std::mutex> lock(shared_->mutex);
    check_alive();
    const uint64_t generation = shared_->generation;
    if (++shared_->arrived == shared_->size) {
      shared_->arrived = 0;
      ++shared_->generation;
      shared_->cv.notify_all();
      return;
    }
    shared_->cv.wait(lock, [&] { return shared_->generation != generation || shared_->abort->aborted; });
    check_alive();
  }

  Tensor all_gather(const Tensor& x) override {
    const Tensor in = publish(x, "all_gather");
    check_same_shapes("all_gather");
    Tensor out = Tensor::empty(with_leading(size(), in.shape()), in.dtype(), in.device());
    const size_t bytes = in.nbytes();
    for (int r = 0; r < size(); ++r)
      std::memcpy(static_cast<char*>(out.raw_data()) + r * bytes, shared_->slots[r], bytes);
    barrier();
    return out;
  }

  Tensor all_to_all(const Tensor& x) override {
    VGEN_CHECK(x.dim() >= 1 && x.size(0) == size(), "all_to_all: {} must be [{} ranks, ...]", x.str(), size());
    const Tensor in = publish(x, "all_to_all");
    check_same_shapes("all_to_all");
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    const size_t chunk = in.nbytes() / size();
    for (int r = 0; r < size(); ++r)
      std::memcpy(static_cast<char*>(out.raw_data()) + r * chunk,
                  static_cast<const char*>(shared_->slots[r]) + rank_ * chunk, chunk);
    barrier();
    return out;
  }

  Tensor send_recv(const Tensor& x, int dst, int src) override {
    VGEN_CHECK(dst >= 0 && dst < size() && src >= 0 && src < size(), "send_recv: ranks {} / {} out of {}", dst, src,
               size());
    const Tensor in = publish(x, "send_recv");
    VGEN_CHECK(shared_->shapes[src] == in.shape() && shared_->dtypes[src] == in.dtype(),
               "send_recv: rank {} receives {} from rank {} but expects {}", rank_, shape_str(shared_->shapes[src]),
               src, in.str());
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    std::memcpy(out.raw_data(), shared_->slots[src], in.nbytes());
    barrier();
    return out;
  }

  void broadcast(const Tensor& x, int root) override {
    VGEN_CHECK(root >= 0 && root < size(), "broadcast: root {} out of {}", root, size());
    VGEN_CHECK(x.is_contiguous(), "broadcast: {} must be contiguous", x.str());
    const Tensor in = publish(x, "broadcast");
    check_same_shapes("broadcast");
    if (rank_ != root) std::memcpy(x.raw_data(), shared_->slots[root], x.nbytes());
    barrier();
  }

  std::shared_ptr<Communicator> split(int color, int key) override {
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->split_requests[rank_] = {color, key};
    }
    barrier();
    std::vector<std::pair<int, int>> members;  // (key, rank) of this color
    for (int r = 0; r < size(); ++r)
      if (shared_->split_requests[r].first == color) members.push_back({shared_->split_requests[r].second, r});
    std::sort(members.begin(), members.end());
    int new_rank = 0;
    while (members[new_rank].second != rank_) ++new_rank;
    if (new_rank == 0) {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->split_groups[color] = make_group(static_cast<int>(members.size()), shared_->abort);
    }
    barrier();
    std::shared_ptr<ThreadShared> group;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      group = shared_->split_groups.at(color);
    }
    barrier();
    if (rank_ == 0) {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->split_groups.clear();
    }
    return std::make_shared<ThreadCommunicator>(std::move(group), new_rank);
  }

 private:
  void check_alive() const {
    if (shared_->abort->aborted) {
      std::lock_guard<std::mutex> lock(shared_->abort->mutex);
      fail("{}", shared_->abort->reason);
    }
  }

  // Makes x contiguous on the CPU, publishes it and waits for every rank's.
  Tensor publish(const Tensor& x, const char* what) {
    VGEN_CHECK(x.defined() && x.device().is_cpu(), "{}: the threads communicator takes CPU tensors, got {}", what,
               x.defined() ? x.str() : std::string("an undefined tensor"));
    Tensor in = x.contiguous();
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->slots[rank_] = in.raw_data();
      shared_->shapes[rank_] = in.shape();
      shared_->dtypes[rank_] = in.dtype();
    }
    barrier();
    return in;
  }

  void check_same_shapes(const char* what) const {
    for (int r = 0; r < size(); ++r)
      VGEN_CHECK(shared_->shapes[r] == shared_->shapes[rank_] && shared_->dtypes[r] == shared_->dtypes[rank_],
                 "{}: rank {} passed {} {} but rank {} {} {}", what, r, dtype_name(shared_->dtypes[r]),
                 shape_str(shared_->shapes[r]), rank_, dtype_name(shared_->dtypes[rank_]),
                 shape_str(shared_->shapes[rank_]));
  }

  std::shared_ptr<ThreadShared> shared_;
  int rank_;
};

}  // namespace

std::shared_ptr<Communicator> make_single_communicator() { return std::make_shared<SingleCommunicator>(); }

std::vector<std::shared_ptr<Communicator>> ThreadGroup::create(int size) {
  VGEN_CHECK(size >= 1, "ThreadGroup: {} ranks", size);
  auto shared = make_group(size, std::make_shared<AbortState>());
  std::vector<std::shared_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_shared<ThreadCommunicator>(shared, r));
  return out;
}

void abort_communicator(Communicator& comm, const std::string& why) {
  if (auto* t = dynamic_cast<ThreadCommunicator*>(&comm)) t->abort(why);
}

void ThreadGroup::run(int size, const std::function<void(int, const std::shared_ptr<Communicator>&)>& fn) {
  const std::vector<std::shared_ptr<Communicator>> comms = create(size);
  std::vector<std::exception_ptr> errors(size);
  auto body = [&](int r) {
    try {
      fn(r, comms[r]);
    } catch (const std::exception& e) {
      errors[r] = std::current_exception();
      abort_communicator(*comms[r], e.what());
    } catch (...) {
      errors[r] = std::current_exception();
      abort_communicator(*comms[r], "unknown exception");
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < size; ++r) threads.emplace_back(body, r);
  body(0);
  for (std::thread& t : threads) t.join();
  // The first rank that failed on its own (not because another aborted the group).
  std::exception_ptr first;
  for (int r = 0; r < size && !first; ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      if (std::string(e.what()).find(" failed: ") == std::string::npos) first = errors[r];
    } catch (...) {
      first = errors[r];
    }
  }
  for (int r = 0; r < size && !first; ++r)
    if (errors[r]) first = errors[r];
  if (first) std::rethrow_exception(first);
}

ParallelLayout::ParallelLayout(std::shared_ptr<Communicator> world, ParallelSizes sizes)
    : world_(std::move(world)), sizes_(sizes) {
  VGEN_CHECK(sizes.cfg_size >= 1 && sizes.ulysses_size >= 1 && sizes.ring_size >= 1,
             "parallel_config: cfg_size {}, ulysses_size {}, ring_size {} must be >= 1", sizes.cfg_size,
             sizes.ulysses_size, sizes.ring_size);
  VGEN_CHECK(sizes.cfg_size <= 2, "parallel_config: cfg_size {} (1, or 2: one rank per CFG branch)", sizes.cfg_size);
  VGEN_CHECK(world_->size() == sizes.world_size(),
             "parallel_config: cfg_size {} x ulysses_size {} x ring_size {} = {} ranks, but the world has {}",
             sizes.cfg_size, sizes.ulysses_size, sizes.ring_size, sizes.world_size(), world_->size());
  const int r = world_->rank(), U = sizes.ulysses_size, R = sizes.ring_size;
  const int u = r % U, ring = (r / U) % R, cfg = r / (U * R);
  // Every split is collective: the same order on every rank.
  ulysses_ = world_->split(cfg * R + ring, u);
  ring_ = world_->split(cfg * U + u, ring);
  sequence_ = world_->split(cfg, ring * U + u);
  cfg_ = world_->split(ring * U + u, cfg);
}

std::shared_ptr<const ParallelLayout> ParallelLayout::single() {
  static const std::shared_ptr<const ParallelLayout> layout =
      std::make_shared<ParallelLayout>(make_single_communicator(), ParallelSizes{});
  return layout;
}

}  // namespace vgen

namespace vgen {
namespace {

DeviceCommunicatorFactory& device_factory(DeviceType type) {
  static DeviceCommunicatorFactory factories[2] = {nullptr, nullptr};
  return factories[type == DeviceType::CPU ? 0 : 1];
}

int env_int(const char* name, int lo, int hi, bool required, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    VGEN_CHECK(!required, "environment: {} is not set (a multi-process run sets RANK, WORLD_SIZE, LOCAL_RANK, "
                          "MASTER_ADDR, MASTER_PORT, as torchrun and `vgen launch` do)", name);
    return fallback;
  }
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  VGEN_CHECK(end != v && *end == '\0' && x >= lo && x <= hi, "environment: {}='{}' must be an integer in [{}, {}]",
             name, v, lo, hi);
  return static_cast<int>(x);
}

}  // namespace

std::optional<ProcessGroupEnv> ProcessGroupEnv::from_environment() {
  const char* ws = std::getenv("WORLD_SIZE");
  if (ws == nullptr || *ws == '\0') return std::nullopt;
  ProcessGroupEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 4096, true, 1);
  e.rank = env_int("RANK", 0, e.world_size - 1, true, 0);
  e.local_rank = env_int("LOCAL_RANK", 0, 1023, false, e.rank);
  e.master_port = env_int("MASTER_PORT", 1, 65535, false, 29500);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  return e;
}

void register_device_communicator(DeviceType type, DeviceCommunicatorFactory factory) {
  device_factory(type) = factory;
}

std::shared_ptr<Communicator> make_device_communicator(DeviceType type, const ProcessGroupEnv& env, int device_index) {
  DeviceCommunicatorFactory f = device_factory(type);
  VGEN_CHECK(f != nullptr, "{} processes: no communicator for this device type (vgen was built without CUDA/NCCL)",
             env.world_size);
  return f(env, device_index);
}

}  // namespace vgen
