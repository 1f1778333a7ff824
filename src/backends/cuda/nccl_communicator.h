// The NCCL communicator: one process per GPU (ProcessGroupEnv: torchrun's variables, as
// `vgen launch` sets them). Rank 0 makes the NCCL unique id and hands it to the others over a
// TCP socket on MASTER_ADDR:MASTER_PORT. Collectives are queued on the calling context's
// stream for the tensor's GPU (ExecutionContext::current()), so they order with the ops around
// them without a host synchronization (barrier() synchronizes).
#pragma once

#include <memory>

#include "core/communicator.h"

namespace vgen::cuda {

// Joins the process group: blocks until all world_size ranks have joined (or fails after
// VGEN_NCCL_TIMEOUT seconds, default 300, naming the address).
std::shared_ptr<Communicator> make_nccl_communicator(const ProcessGroupEnv& env, int device_index);

}  // namespace vgen::cuda
