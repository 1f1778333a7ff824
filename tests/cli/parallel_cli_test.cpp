// `vgen generate` with --cfg-size / --ulysses-size / --ring-size / --parallel-vae on the CPU
// (the ranks are threads), its refusals, and `vgen launch` starting, running and stopping
// processes (the NCCL side needs GPUs: tests/gpu/parallel_nccl_test.cpp).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "media/image.h"
#include "support/command.h"
#include "support/parity.h"

namespace fs = std::filesystem;
using vgen::testing::fixture;

namespace {

struct Result {
  int code = -1;
  std::string out;  // stdout + stderr
};

Result run(const std::string& args) {
  const std::string cmd = std::string(VGEN_BINARY) + " " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

const std::string kRun = " --prompt 'a red fox in the snow' --steps 2 --seed 7 --quiet --device cpu --height 48 --width 48 --num-frames 5 ";

}  // namespace

TEST(ParallelCli, ThreadRanksWriteWhatOneRankWrites) {
  const std::string one = vgen::testing::fresh_dir("par_cli_one"), many = vgen::testing::fresh_dir("par_cli_many");
  Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kRun + "-o " + one + "/");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("generate --model " + fixture("wan21_t2v_tiny") + kRun +
          "--cfg-size 2 --ring-size 2 --parallel-vae -o " + many + "/");
  ASSERT_EQ(r.code, 0) << r.out;
  // One set of frames (rank 0 writes), each within one uint8 level of the one-rank frame.
  int frames = 0;
  for (const auto& e : fs::directory_iterator(many)) {
    ++frames;
    const vgen::Tensor a = vgen::media::read_image(e.path().string());
    const vgen::Tensor b = vgen::media::read_image((fs::path(one) / e.path().filename()).string());
    ASSERT_EQ(a.shape(), b.shape());
    const uint8_t* x = a.data<uint8_t>();
    const uint8_t* y = b.data<uint8_t>();
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_LE(std::abs(x[i] - y[i]), 1) << e.path() << " byte " << i;
  }
  EXPECT_EQ(frames, 5);
}

TEST(ParallelCli, RefusesSizesTheModelOrTheMachineCannotTake) {
  Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kRun + "--ulysses-size 2 -o /tmp/vgen_never.mp4");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("ulysses_size 2 does not divide the transformer's 3 attention heads"), std::string::npos) << r.out;
  r = run("generate --model " + fixture("wan21_t2v_tiny") + kRun + "--cfg-size 3 -o /tmp/vgen_never.mp4");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--cfg-size"), std::string::npos) << r.out;
  // Processes on the CPU: the ranks are threads, not processes.
  r = run("launch -n 2 -- generate --model " + fixture("wan21_t2v_tiny") + kRun + "--cfg-size 2 -o /tmp/vgen_never.mp4");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("run it without `vgen launch`"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vgen launch: rank "), std::string::npos) << r.out;
  r = run("launch -n 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("no command after '--'"), std::string::npos) << r.out;
}

TEST(ParallelCli, LaunchRunsEveryRankWithTorchrunsVariablesAndStops) {
  // `info` needs no communicator: both ranks run it and end; launch returns 0.
  const Result r = run("launch -n 2 -- info " + fixture("wan21_t2v_tiny"));
  EXPECT_EQ(r.code, 0) << r.out;
  size_t count = 0;
  for (size_t pos = r.out.find("WanPipeline"); pos != std::string::npos; pos = r.out.find("WanPipeline", pos + 1)) ++count;
  EXPECT_GE(count, 2u) << r.out;
  // A rank that fails takes the run down with its rank and status named.
  const Result bad = run("launch -n 3 -- info /no/such/model");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("error: vgen launch: rank "), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("exited with status"), std::string::npos) << bad.out;
}
