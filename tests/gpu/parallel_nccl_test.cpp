// CFG and sequence parallelism over NCCL: the same checks as tests/pipelines/parallel_test.cpp
// with one GPU per rank (threads of this process, each bootstrapped as `vgen launch` does it:
// RANK/WORLD_SIZE/LOCAL_RANK and rank 0's TCP port). With one GPU the NCCL communicator runs
// with world size 1 (every collective, the pipeline with a one-rank layout); the combinations
// of 2 to 4 ranks run where that many GPUs exist. Skipped without CUDA.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <thread>

#include "core/communicator.h"
#include "core/random.h"
#include "nn/attention.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;

namespace {

// GPUs that take a runtime (no CUDA headers in the tests).
int gpu_count() {
  static const int n = [] {
    int k = 0;
    for (; k < 16; ++k) {
      try {
        ExecutionContext c(Device::cuda(k));
        c.runtime(Device::cuda(k)).activate();
      } catch (const std::exception&) {
        break;
      }
    }
    return k;
  }();
  return n;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs fn(rank, communicator) on `n` threads, rank r on GPU r with its own execution context.
void run_nccl_ranks(int n, const std::function<void(int, const std::shared_ptr<Communicator>&)>& fn) {
  const int port = free_port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(n);
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        vgen::testing::ScopedContext ctx(Device::cuda(r), ExecutionSettings::from_environment());
        ProcessGroupEnv env;
        env.rank = r;
        env.world_size = n;
        env.local_rank = r;
        env.master_port = port;
        fn(r, make_device_communicator(DeviceType::CUDA, env, r));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

Tensor host(const Tensor& t) { return t.to(Device::cpu()).to(DType::F32).contiguous(); }

TEST(NcclCommunicator, CollectivesOnEveryGpuCount) {
  SKIP_WITHOUT_GPU();
  for (int n = 1; n <= std::min(gpu_count(), 4); ++n) {
    run_nccl_ranks(n, [&](int rank, const std::shared_ptr<Communicator>& comm) {
      const Device d = Device::cuda(rank);
      EXPECT_EQ(comm->kind(), "nccl");
      EXPECT_EQ(comm->size(), n);
      const Tensor mine = Tensor::full({2, 3}, static_cast<float>(rank)).to(d);
      const std::vector<float> g = host(comm->all_gather(mine)).to_vector();
      for (int r = 0; r < n; ++r) EXPECT_EQ(g[r * 6], static_cast<float>(r));
      // all_to_all: chunk j = 10 * rank + j; rank r receives 10 * j + r from rank j.
      std::vector<float> send;
      for (int j = 0; j < n; ++j) send.insert(send.end(), 4, 10.0f * rank + j);
      const std::vector<float> a = host(comm->all_to_all(Tensor::from_vector(send, {n, 4}).to(d))).to_vector();
      for (int j = 0; j < n; ++j) EXPECT_EQ(a[j * 4], 10.0f * j + rank);
      const std::vector<float> s = host(comm->send_recv(mine, (rank + 1) % n, (rank + n - 1) % n)).to_vector();
      EXPECT_EQ(s[0], static_cast<float>((rank + n - 1) % n));
      Tensor b = Tensor::full({5}, static_cast<float>(rank)).to(d);
      comm->broadcast(b, n - 1);
      EXPECT_EQ(host(b).to_vector()[4], static_cast<float>(n - 1));
      comm->barrier();
      const std::shared_ptr<Communicator> sub = comm->split(rank % 2, rank);
      EXPECT_EQ(sub->size(), (n - rank % 2 + 1) / 2);
    });
  }
}

// The parallel attention on the GPU in float32 against the CPU's unsharded attention.
TEST(NcclCommunicator, AttentionLseMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  vgen::testing::ScopedContext ctx(Device::cuda(0), ExecutionSettings::from_environment());
  const Tensor q = randn({2, 3, 40, 64}, 1), k = randn({2, 3, 70, 64}, 2), v = randn({2, 3, 70, 64}, 3);
  const ops::AttentionWithLse cpu = ops::attention_lse(q, k, v, 0.125f);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Device g = Device::cuda(0);
    const ops::AttentionWithLse gpu = ops::attention_lse(q.to(g).to(dt), k.to(g).to(dt), v.to(g).to(dt), 0.125f);
    EXPECT_LT(vgen::testing::rel_l2(host(gpu.out), cpu.out), dt == DType::F32 ? 1e-5 : 1.5e-2);
    EXPECT_LT(max_abs_diff(host(gpu.lse), cpu.lse), dt == DType::F32 ? 1e-4 : 5e-2);
  }
}

GenerationParams tiny_request() {
  GenerationParams p;
  p.prompt = "a lighthouse at dusk";
  p.height = 48;
  p.width = 48;
  p.num_frames = 9;
  p.num_inference_steps = 3;
  p.guidance_scale = 4.0;
  p.seed = 7;
  return p;
}

PipelineOptions gpu_f32(int rank) {
  PipelineOptions o = default_pipeline_options(Device::cuda(rank));
  o.dtype = DType::F32;
  o.execution.allow_tf32 = false;
  return o;
}

// Every split on as many GPUs as there are (the tiny fixture has 3 heads: Ulysses 1 or 3),
// float32, against one GPU without a communicator: within the CPU tests' bounds.
TEST(NcclParallel, WanMatchesOneGpu) {
  SKIP_WITHOUT_GPU();
  const GenerationParams params = tiny_request();
  GenerationOutput want;
  {
    const auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), gpu_f32(0));
    want = pipe->generate(pipe->resolve(params));
  }
  const double scale = [&] {
    double m = 0;
    for (float x : want.denoised_latents.to_vector()) m = std::max(m, static_cast<double>(std::fabs(x)));
    return m;
  }();
  for (const ParallelSizes sizes : {ParallelSizes{1, 1, 1}, ParallelSizes{2, 1, 1}, ParallelSizes{1, 1, 2},
                                    ParallelSizes{1, 3, 1}, ParallelSizes{1, 1, 3}, ParallelSizes{2, 1, 2},
                                    ParallelSizes{1, 1, 4}}) {
    if (sizes.world_size() > gpu_count()) continue;
    std::vector<GenerationOutput> got(sizes.world_size());
    run_nccl_ranks(sizes.world_size(), [&](int rank, const std::shared_ptr<Communicator>& comm) {
      PipelineOptions o = gpu_f32(rank);
      o.parallel = std::make_shared<ParallelLayout>(comm, sizes);
      const auto pipe = load_pipeline(fixture("wan21_t2v_tiny"), o);
      got[rank] = pipe->generate(pipe->resolve(params));
    });
    for (size_t r = 0; r < got.size(); ++r) {
      const double err = max_abs_diff(host(got[r].denoised_latents), host(want.denoised_latents));
      std::printf("[ nccl cfg %d ulysses %d ring %d rank %zu ] latents max |diff| %.3g (scale %.3g)\n", sizes.cfg_size,
                  sizes.ulysses_size, sizes.ring_size, r, err, scale);
      EXPECT_LT(err, 1e-5 * scale);
    }
  }
}

}  // namespace
