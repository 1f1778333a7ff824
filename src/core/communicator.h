// Communicators: the collectives that CFG and sequence parallelism need (all-gather,
// all-to-all, a ring's send/recv, broadcast, barrier), behind one interface with three
// implementations: one rank (no-op, what every single-device run has), threads of one process
// on the CPU (ThreadGroup: every parallel path runs in CI without GPUs), and NCCL (one process
// per GPU, backends/cuda/nccl_communicator.h).
//
// Every rank of a communicator calls the same collectives in the same order with tensors of
// the same shape and dtype (what NCCL requires too). Tensors may be strided; results are new
// contiguous tensors on the input's device.
//
// ParallelLayout cuts a world of cfg_size x ulysses_size x ring_size ranks into the groups the
// models use; the execution context carries it (ExecutionContext::parallel()).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

namespace vgen {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single", "threads" or "nccl".
  virtual std::string kind() const = 0;

  // x [...] from every rank -> [size, ...], rank r's x at index r.
  virtual Tensor all_gather(const Tensor& x) = 0;
  // x [size, ...]: x[j] goes to rank j. -> [size, ...]: out[j] is what rank j sent to this rank.
  virtual Tensor all_to_all(const Tensor& x) = 0;
  // One ring step, every rank at once: sends x to rank `dst`, returns what rank `src` sent
  // (x's shape and dtype).
  virtual Tensor send_recv(const Tensor& x, int dst, int src) = 0;
  // Rank `root`'s x -> every rank (x contiguous; overwritten in place on the others).
  virtual void broadcast(const Tensor& x, int root) = 0;
  virtual void barrier() = 0;
  // Collective: the ranks that pass the same color form a new communicator, ranked by key
  // (ties by rank), as MPI_Comm_split / ncclCommSplit.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;
};

// One rank: every collective is a copy (or nothing).
std::shared_ptr<Communicator> make_single_communicator();

// Threads of one process as ranks, CPU tensors only. A rank whose work throws calls abort():
// the others then fail at their next collective ("rank R failed: ...") instead of waiting.
class ThreadGroup {
 public:
  // One communicator per rank; rank r's is used by one thread at a time.
  static std::vector<std::shared_ptr<Communicator>> create(int size);
  // Runs fn(rank, communicator) on `size` threads (rank 0 on the calling thread) and waits for
  // all; the first failure (by rank) is rethrown after every thread ended.
  static void run(int size, const std::function<void(int rank, const std::shared_ptr<Communicator>&)>& fn);
};
// Marks a ThreadGroup communicator's group failed (no-op for the other kinds).
void abort_communicator(Communicator& comm, const std::string& why);

// How a world of ranks is divided: rank = (cfg * ring_size + ring) * ulysses_size + ulysses,
// Ulysses innermost (its all-to-alls are the heaviest: neighbouring GPUs), then ring, then CFG.
struct ParallelSizes {
  int cfg_size = 1, ulysses_size = 1, ring_size = 1;
  int world_size() const { return cfg_size * ulysses_size * ring_size; }
  int sequence_size() const { return ulysses_size * ring_size; }
};

class ParallelLayout {
 public:
  // Splits `world` (world->size() must equal sizes.world_size(): an error naming both).
  ParallelLayout(std::shared_ptr<Communicator> world, ParallelSizes sizes);
  // One rank, no parallelism.
  static std::shared_ptr<const ParallelLayout> single();

  const ParallelSizes& sizes() const { return sizes_; }
  int rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  // This rank's CFG branch index (0: conditional) and position in the sequence groups.
  int cfg_rank() const { return cfg_->rank(); }
  int ulysses_rank() const { return ulysses_->rank(); }
  int ring_rank() const { return ring_->rank(); }
  // The rank's index in its sequence group (ring_rank * ulysses_size + ulysses_rank).
  int sequence_rank() const { return sequence_->rank(); }

  Communicator& world() const { return *world_; }
  Communicator& cfg() const { return *cfg_; }          // the cfg_size ranks holding one token shard
  Communicator& ulysses() const { return *ulysses_; }  // all-to-all over heads
  Communicator& ring() const { return *ring_; }        // K/V blocks passed around
  Communicator& sequence() const { return *sequence_; }  // the ulysses x ring ranks of one branch

 private:
  std::shared_ptr<Communicator> world_, cfg_, ulysses_, ring_, sequence_;
  ParallelSizes sizes_;
};

}  // namespace vgen

namespace vgen {

// Where this process sits in a multi-process run: torchrun's environment variables RANK,
// WORLD_SIZE, LOCAL_RANK (the GPU index), MASTER_ADDR, MASTER_PORT (where rank 0 hands the
// others the NCCL id), as `vgen launch` sets them.
struct ProcessGroupEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // nullopt when WORLD_SIZE is unset; a malformed or inconsistent variable is an error naming it.
  static std::optional<ProcessGroupEnv> from_environment();
};

// The communicator of one process per device (NCCL for CUDA), registered by the backend.
using DeviceCommunicatorFactory = std::shared_ptr<Communicator> (*)(const ProcessGroupEnv& env, int device_index);
void register_device_communicator(DeviceType type, DeviceCommunicatorFactory factory);
// Throws naming the device type when its backend brings no communicator (built without CUDA).
std::shared_ptr<Communicator> make_device_communicator(DeviceType type, const ProcessGroupEnv& env, int device_index);

}  // namespace vgen
