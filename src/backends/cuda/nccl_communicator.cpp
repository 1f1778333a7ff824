#include "backends/cuda/nccl_communicator.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <cuda_runtime.h>
#include <nccl.h>

#include "backends/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/execution_context.h"

namespace vgen::cuda {

void check(cudaError_t err, const char* what);  // cuda_backend.cpp

namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("nccl: {}: {} ({})", what, ncclGetErrorString(r), ncclGetLastError(nullptr));
}

double timeout_seconds() {
  const char* v = std::getenv("VGEN_NCCL_TIMEOUT");
  return v && *v ? std::atof(v) : 300.0;
}

// A file descriptor closed at scope end.
struct Socket {
  int fd = -1;
  explicit Socket(int f) : fd(f) {}
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

void send_all(int fd, const void* data, size_t n, const std::string& peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    VGEN_CHECK(k > 0, "nccl bootstrap: sending to {}: {}", peer, std::strerror(errno));
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void recv_all(int fd, void* data, size_t n, const std::string& peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    VGEN_CHECK(k > 0, "nccl bootstrap: receiving from {}: {}", peer, k == 0 ? "connection closed" : std::strerror(errno));
    p += k;
    n -= static_cast<size_t>(k);
  }
}

// Rank 0: listens on MASTER_PORT and sends the id to the world_size - 1 others (each sends
// its rank first, so a stray connection is refused).
void serve_id(const ProcessGroupEnv& env, const ncclUniqueId& id) {
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  Socket s(::socket(AF_INET, SOCK_STREAM, 0));
  VGEN_CHECK(s.fd >= 0, "nccl bootstrap: socket: {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(env.master_port));
  VGEN_CHECK(::bind(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0,
             "nccl bootstrap: rank 0 cannot listen on port {} (MASTER_PORT): {}", env.master_port,
             std::strerror(errno));
  VGEN_CHECK(::listen(s.fd, env.world_size) == 0, "nccl bootstrap: listen on {}: {}", where, std::strerror(errno));
  for (int served = 1; served < env.world_size;) {
    Socket c(::accept(s.fd, nullptr, nullptr));
    VGEN_CHECK(c.fd >= 0, "nccl bootstrap: accept on {}: {}", where, std::strerror(errno));
    int32_t peer_rank = -1;
    recv_all(c.fd, &peer_rank, sizeof peer_rank, "a rank");
    VGEN_CHECK(peer_rank > 0 && peer_rank < env.world_size, "nccl bootstrap: a process on {} says it is rank {} of {}",
               where, peer_rank, env.world_size);
    send_all(c.fd, &id, sizeof id, fmt::format("rank {}", peer_rank));
    ++served;
  }
}

ncclUniqueId fetch_id(const ProcessGroupEnv& env) {
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int rc = ::getaddrinfo(env.master_addr.c_str(), std::to_string(env.master_port).c_str(), &hints, &res);
  VGEN_CHECK(rc == 0, "nccl bootstrap: MASTER_ADDR '{}': {}", env.master_addr, gai_strerror(rc));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds());
  for (;;) {
    Socket s(::socket(AF_INET, SOCK_STREAM, 0));
    if (s.fd >= 0 && ::connect(s.fd, res->ai_addr, res->ai_addrlen) == 0) {
      ::freeaddrinfo(res);
      const int32_t me = env.rank;
      send_all(s.fd, &me, sizeof me, "rank 0 at " + where);
      ncclUniqueId id;
      recv_all(s.fd, &id, sizeof id, "rank 0 at " + where);
      return id;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::freeaddrinfo(res);
      fail("nccl bootstrap: rank {} could not reach rank 0 at {} within {} s (VGEN_NCCL_TIMEOUT)", env.rank, where,
           timeout_seconds());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

cudaStream_t stream_for(const Tensor& x, const char* what) {
  VGEN_CHECK(x.defined() && x.device().is_cuda(), "nccl {}: {} is not on a GPU", what,
             x.defined() ? x.str() : std::string("an undefined tensor"));
  DeviceRuntime& rt = ExecutionContext::current().runtime(x.device()).underlying();
  auto* backend = dynamic_cast<CudaBackend*>(&rt);
  VGEN_CHECK(backend != nullptr, "nccl {}: the runtime of {} is not the CUDA backend", what, x.device().str());
  return backend->stream();
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device) : comm_(comm), device_(device) {
    nccl_check(ncclCommUserRank(comm_, &rank_), "rank");
    nccl_check(ncclCommCount(comm_, &size_), "size");
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "nccl"; }

  // Bytes move as bytes: none of these collectives reduce.
  Tensor all_gather(const Tensor& x) override {
    const cudaStream_t s = stream_for(x, "all_gather");
    const Tensor in = x.contiguous();
    Shape shape{size_};
    shape.insert(shape.end(), in.shape().begin(), in.shape().end());
    Tensor out = Tensor::empty(shape, in.dtype(), in.device());
    nccl_check(ncclAllGather(in.raw_data(), out.raw_data(), in.nbytes(), ncclUint8, comm_, s), "all_gather");
    return out;
  }

  Tensor all_to_all(const Tensor& x) override {
    VGEN_CHECK(x.dim() >= 1 && x.size(0) == size_, "all_to_all: {} must be [{} ranks, ...]", x.str(), size_);
    const cudaStream_t s = stream_for(x, "all_to_all");
    const Tensor in = x.contiguous();
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    const size_t chunk = in.nbytes() / size_;
    nccl_check(ncclGroupStart(), "group start");
    for (int r = 0; r < size_; ++r) {
      nccl_check(ncclSend(static_cast<const char*>(in.raw_data()) + r * chunk, chunk, ncclUint8, r, comm_, s), "send");
      nccl_check(ncclRecv(static_cast<char*>(out.raw_data()) + r * chunk, chunk, ncclUint8, r, comm_, s), "recv");
    }
    nccl_check(ncclGroupEnd(), "all_to_all");
    return out;
  }

  Tensor send_recv(const Tensor& x, int dst, int src) override {
    VGEN_CHECK(dst >= 0 && dst < size_ && src >= 0 && src < size_, "send_recv: ranks {} / {} out of {}", dst, src,
               size_);
    const cudaStream_t s = stream_for(x, "send_recv");
    const Tensor in = x.contiguous();
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    nccl_check(ncclGroupStart(), "group start");
    nccl_check(ncclSend(in.raw_data(), in.nbytes(), ncclUint8, dst, comm_, s), "send");
    nccl_check(ncclRecv(out.raw_data(), out.nbytes(), ncclUint8, src, comm_, s), "recv");
    nccl_check(ncclGroupEnd(), "send_recv");
    return out;
  }

  void broadcast(const Tensor& x, int root) override {
    VGEN_CHECK(root >= 0 && root < size_, "broadcast: root {} out of {}", root, size_);
    VGEN_CHECK(x.is_contiguous(), "broadcast: {} must be contiguous", x.str());
    const cudaStream_t s = stream_for(x, "broadcast");
    nccl_check(ncclBroadcast(x.raw_data(), x.raw_data(), x.nbytes(), ncclUint8, root, comm_, s), "broadcast");
  }

  void barrier() override {
    check(cudaSetDevice(device_), "select the device");
    const Tensor one = Tensor::zeros({1}, DType::F32, Device::cuda(device_));
    const cudaStream_t s = stream_for(one, "barrier");
    nccl_check(ncclAllReduce(one.raw_data(), one.raw_data(), 1, ncclFloat32, ncclSum, comm_, s), "barrier");
    check(cudaStreamSynchronize(s), "barrier");
  }

  std::shared_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    nccl_check(ncclCommSplit(comm_, color, key, &sub, nullptr), "split");
    return std::make_shared<NcclCommunicator>(sub, device_);
  }

 private:
  // A contiguous copy of an input (`in`) may be dropped once queued: tensors are freed
  // stream-ordered (the caching pool), so its memory is reused only after the collective ran.

  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator(const ProcessGroupEnv& env, int device_index) {
  VGEN_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "nccl: rank {} of {}", env.rank,
             env.world_size);
  int devices = 0;
  check(cudaGetDeviceCount(&devices), "count the GPUs");
  VGEN_CHECK(device_index >= 0 && device_index < devices,
             "nccl: rank {} wants GPU {} (LOCAL_RANK) but this machine has {} GPU(s)", env.rank, device_index,
             devices);
  check(cudaSetDevice(device_index), "select the device");
  ncclUniqueId id;
  if (env.rank == 0) {
    nccl_check(ncclGetUniqueId(&id), "unique id");
    if (env.world_size > 1) serve_id(env, id);
  } else {
    id = fetch_id(env);
  }
  ncclComm_t comm = nullptr;
  nccl_check(ncclCommInitRank(&comm, env.world_size, id, env.rank), "init (all ranks must join)");
  return std::make_shared<NcclCommunicator>(comm, device_index);
}

namespace {
const bool registered = [] {
  register_device_communicator(DeviceType::CUDA, &make_nccl_communicator);
  return true;
}();
}  // namespace

}  // namespace vgen::cuda
