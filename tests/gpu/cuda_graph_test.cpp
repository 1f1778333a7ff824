// GraphedCallable (ops/graphed_callable.h): the transformer step replayed from a CUDA graph
// gives exactly the eager numbers, and work a graph cannot hold falls back to eager runs with
// the right result. The GPU cases skip where no CUDA device is found.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/random.h"
#include "io/checkpoint.h"
#include "models/flux/transformer_flux.h"
#include "models/wan/transformer_wan.h"
#include "ops/graphed_callable.h"
#include "ops/ops.h"
#include "support/gpu.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::kGpu;
using vgen::testing::perturbed_on_gpu;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;

namespace {

Tensor host_f32(const Tensor& t) { return t.to(Device::cpu()).to(DType::F32).contiguous(); }

// x * 2 + 1 on the device, the function most tests below graph.
Tensor affine(const std::vector<Tensor>& in, const std::vector<int64_t>&) {
  return ops::add_scalar(ops::scale(in[0], 2.0f), 1.0f);
}

}  // namespace

TEST(GraphedCallable, RunsThroughOnTheCpu) {
  int calls = 0;
  GraphedCallable g("test", [&](const std::vector<Tensor>& in, const std::vector<int64_t>& p) {
    ++calls;
    return affine(in, p);
  });
  const Tensor x = randn({3, 5}, 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(max_abs_diff(g({x}), affine({x}, {})), 0.0);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(g.captures(), 0);
  EXPECT_EQ(g.replays(), 0);
}

TEST(CudaGraph, ReplaysTrackNewInputs) {
  SKIP_WITHOUT_GPU();
  int calls = 0;
  GraphedCallable g("test", [&](const std::vector<Tensor>& in, const std::vector<int64_t>& p) {
    ++calls;
    return affine(in, p);
  });
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const Tensor x = randn({7, 33}, seed);
    const Tensor got = g({x.to(kGpu)});
    EXPECT_EQ(max_abs_diff(host_f32(got), affine({x}, {})), 0.0) << "call " << seed;
  }
  // Call 1 ran eagerly, call 2 recorded (the function ran once more, on the host side) and
  // replayed, calls 3 and 4 only replayed.
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(g.captures(), 1);
  EXPECT_EQ(g.replays(), 3);

  // Another shape is another recording; params are part of the key too.
  const Tensor y = randn({2, 5}, 9);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(max_abs_diff(host_f32(g({y.to(kGpu)}, {1})), affine({y}, {})), 0.0);
  EXPECT_EQ(g.captures(), 2);
}

TEST(CudaGraph, LeastRecentlyUsedRecordingIsDropped) {
  SKIP_WITHOUT_GPU();
  GraphedCallable g("test", affine, 1);
  const Tensor a = randn({4}, 1).to(kGpu), b = randn({6}, 2).to(kGpu);
  for (int i = 0; i < 2; ++i) (void)g({a});
  EXPECT_EQ(g.captures(), 1);
  for (int i = 0; i < 2; ++i) (void)g({b});  // evicts a's recording
  EXPECT_EQ(g.captures(), 2);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(max_abs_diff(host_f32(g({a})), host_f32(affine({a}, {}))), 0.0);
  EXPECT_EQ(g.captures(), 3);
}

TEST(CudaGraph, HostSynchronizationFallsBackToEagerRuns) {
  SKIP_WITHOUT_GPU();
  int calls = 0;
  // Reading the input on the host cannot be recorded: the call still returns the right
  // numbers, and later calls run eagerly.
  GraphedCallable g("test", [&](const std::vector<Tensor>& in, const std::vector<int64_t>&) {
    ++calls;
    const float first = in[0].to_vector()[0];
    return ops::add_scalar(in[0], first);
  });
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    const Tensor x = randn({16}, seed);
    const Tensor want = ops::add_scalar(x, x.to_vector()[0]);
    EXPECT_EQ(max_abs_diff(host_f32(g({x.to(kGpu)})), want), 0.0) << "call " << seed;
  }
  EXPECT_EQ(g.captures(), 0);
  EXPECT_EQ(g.replays(), 0);
  EXPECT_GE(calls, 3);
  // The stream is usable afterwards.
  const Tensor x = randn({16}, 7);
  EXPECT_EQ(max_abs_diff(host_f32(affine({x.to(kGpu)}, {})), affine({x}, {})), 0.0);
}

TEST(CudaGraph, MemoryOutlivingTheRecordingIsRefused) {
  SKIP_WITHOUT_GPU();
  Tensor kept;  // a cache filled inside the recording would dangle after a replay
  GraphedCallable g("test", [&](const std::vector<Tensor>& in, const std::vector<int64_t>& p) {
    kept = ops::scale(in[0], 3.0f);
    return affine(in, p);
  });
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    const Tensor x = randn({8, 8}, seed);
    EXPECT_EQ(max_abs_diff(host_f32(g({x.to(kGpu)})), affine({x}, {})), 0.0) << "call " << seed;
    EXPECT_EQ(max_abs_diff(host_f32(kept), ops::scale(x, 3.0f)), 0.0) << "call " << seed;
  }
  EXPECT_EQ(g.captures(), 0);
}

TEST(CudaGraph, AFailedFirstCallLeavesNothingBehind) {
  SKIP_WITHOUT_GPU();
  bool fail_next = true;
  GraphedCallable g("test", [&](const std::vector<Tensor>& in, const std::vector<int64_t>& p) {
    if (fail_next) throw Error("bad inputs");
    return affine(in, p);
  });
  const Tensor x = randn({5, 3}, 1);
  EXPECT_THROW((void)g({x.to(kGpu)}), Error);
  fail_next = false;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(max_abs_diff(host_f32(g({x.to(kGpu)})), affine({x}, {})), 0.0);
  EXPECT_EQ(g.captures(), 1);  // graphs still on: the failure was the call's, not the recording's
  EXPECT_EQ(g.replays(), 2);
}

// The Wan transformer with the step graphed gives bit for bit what it gives eagerly, over
// calls with new latents, timesteps and text, in float32 and bf16.
TEST(CudaGraph, WanTransformerReplayIsBitwiseEager) {
  SKIP_WITHOUT_GPU();
  for (const char* name : {"wan21_t2v_tiny", "wan21_t2v_tiny_b"}) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      const auto model = WanTransformer3DModel::from_pretrained(fixture(std::string(name) + "/transformer"), dtype, kGpu);
      const WeightStore ref = reference(std::string(name) + "_ref/transformer.safetensors");
      const Tensor x0 = ref.get("hidden_states"), ctx0 = ref.get("encoder_hidden_states");
      const float timesteps[] = {999.0f, 700.0f, 301.5f, 12.0f};
      std::vector<Tensor> graphed, eager;
      for (bool graphs : {true, false}) {
        model->enable_cuda_graphs(graphs);
        for (int i = 0; i < 4; ++i) {
          const Tensor t = Tensor::full({x0.size(0)}, timesteps[i]);
          (graphs ? graphed : eager)
              .push_back(host_f32(model->forward(perturbed_on_gpu(x0, 10 + i), t, perturbed_on_gpu(ctx0, 20 + i))));
        }
        if (graphs) {
          EXPECT_EQ(model->graphed_step().captures(), 1) << name;
          EXPECT_EQ(model->graphed_step().replays(), 3) << name;
        }
      }
      for (int i = 0; i < 4; ++i)
        EXPECT_EQ(max_abs_diff(graphed[i], eager[i]), 0.0) << name << " " << dtype_name(dtype) << " call " << i;
    }
  }
}

// The same for FLUX: over calls with new latents, text, timesteps and guidance (and a second
// image size, which records a second graph), the graphed blocks give what the eager ones give.
TEST(CudaGraph, FluxTransformerReplayIsBitwiseEager) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::F32, DType::BF16}) {
    const auto model = FluxTransformer2DModel::from_pretrained(fixture("flux_dev_tiny/transformer"), dtype, kGpu);
    const WeightStore ref = reference("flux_dev_tiny_ref/transformer.safetensors");
    const Tensor x0 = ref.get("hidden_states"), ctx0 = ref.get("encoder_hidden_states");
    const Tensor pooled = ref.get("pooled_projections").to(kGpu);
    const Tensor img_ids = ref.get("img_ids"), txt_ids = ref.get("txt_ids");
    const float sigmas[] = {1.0f, 0.7f, 0.3015f, 0.012f};
    std::vector<Tensor> graphed, eager;
    for (bool graphs : {true, false}) {
      model->enable_cuda_graphs(graphs);
      for (int i = 0; i < 4; ++i) {
        const Tensor t = Tensor::full({x0.size(0)}, sigmas[i]), g = Tensor::full({x0.size(0)}, 1.5f + i);
        (graphs ? graphed : eager)
            .push_back(host_f32(model->forward(perturbed_on_gpu(x0, 10 + i), perturbed_on_gpu(ctx0, 20 + i), pooled, t,
                                               img_ids, txt_ids, g)));
      }
      // Half the image tokens (other ids): a second recording, beside the first.
      const int64_t half = x0.size(1) / 2;
      const Tensor xs = x0.narrow(1, 0, half).contiguous().to(kGpu);
      for (int i = 0; i < 2; ++i)
        (graphs ? graphed : eager)
            .push_back(host_f32(model->forward(xs, ctx0.to(kGpu), pooled, Tensor::full({x0.size(0)}, 0.5f),
                                               img_ids.narrow(0, 0, half).contiguous(), txt_ids,
                                               Tensor::full({x0.size(0)}, 3.5f))));
      if (graphs) {
        EXPECT_EQ(model->graphed_step().captures(), 2) << dtype_name(dtype);
        EXPECT_EQ(model->graphed_step().replays(), 4) << dtype_name(dtype);
      }
    }
    ASSERT_EQ(graphed.size(), eager.size());
    for (size_t i = 0; i < graphed.size(); ++i)
      EXPECT_EQ(max_abs_diff(graphed[i], eager[i]), 0.0) << dtype_name(dtype) << " call " << i;
  }
}
