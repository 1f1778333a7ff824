// The ETAs of the phases other than denoising (cli/progress.h): PhaseEstimator's rates, their
// persistence between runs, and what Progress prints with an estimate.
#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace fs = std::filesystem;

namespace vgen {
namespace {

TEST(PhaseEstimator, ScalesTheLastMeasuredRateWithTheWork) {
  PhaseEstimator e("");
  EXPECT_FALSE(e.estimate("decode|cpu", 1000).has_value());  // never measured
  e.record("decode|cpu", 1000, 2.0);                          // 2 ms per unit
  ASSERT_TRUE(e.estimate("decode|cpu", 4000).has_value());
  EXPECT_DOUBLE_EQ(*e.estimate("decode|cpu", 4000), 8.0);
  EXPECT_FALSE(e.estimate("decode|cuda:0", 4000).has_value());  // another key
  EXPECT_FALSE(e.estimate("decode|cpu", 0).has_value());        // no work: no estimate
  e.record("decode|cpu", 1000, 1.0);                            // the latest measurement wins
  EXPECT_DOUBLE_EQ(*e.estimate("decode|cpu", 4000), 4.0);
  e.record("decode|cpu", 0, 5.0);  // nothing measured: ignored
  e.record("decode|cpu", 10, 0.0);
  EXPECT_DOUBLE_EQ(*e.estimate("decode|cpu", 4000), 4.0);
}

TEST(PhaseEstimator, KeepsRatesBetweenRunsAndIgnoresADamagedFile) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("phase_rates_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const std::string file = (dir / "sub" / "rates.json").string();  // folders are created
  {
    PhaseEstimator e(file);
    EXPECT_FALSE(e.estimate("load|cpu", 1e9).has_value());
    e.record("load|cpu", 1e9, 4.0);
    e.save();
  }
  ASSERT_TRUE(fs::exists(file));
  PhaseEstimator again(file);
  ASSERT_TRUE(again.estimate("load|cpu", 2e9).has_value());
  EXPECT_DOUBLE_EQ(*again.estimate("load|cpu", 2e9), 8.0);

  std::ofstream(file) << "{ not json";
  PhaseEstimator damaged(file);
  EXPECT_FALSE(damaged.estimate("load|cpu", 1e9).has_value());
  std::ofstream(file) << R"({"load|cpu": -1, "write|mp4": "x", "decode|cpu": 0.5})";
  PhaseEstimator partial(file);
  EXPECT_FALSE(partial.estimate("load|cpu", 1).has_value());
  EXPECT_FALSE(partial.estimate("write|mp4", 1).has_value());
  EXPECT_DOUBLE_EQ(*partial.estimate("decode|cpu", 2), 1.0);

  PhaseEstimator nowhere("/proc/no/such/folder/rates.json");  // cannot be written: no error
  nowhere.record("load|cpu", 1, 1);
  nowhere.save();
  fs::remove_all(dir);
}

// What a log (stderr not a terminal) shows of a phase with an estimate.
TEST(Progress, PrintsTheEstimateOfAPhase) {
  const fs::path log = fs::path(::testing::TempDir()) / ("progress_" + std::to_string(getpid()) + ".log");
  std::fflush(stderr);
  const int saved = dup(fileno(stderr));
  ASSERT_NE(freopen(log.c_str(), "w", stderr), nullptr);
  {
    Progress p(2, true);
    p.begin("decoding (VAE)", 0.0, 75.0);
    p.end();
    p.begin("writing");
    p.end();
  }
  std::fflush(stderr);
  dup2(saved, fileno(stderr));
  close(saved);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("[1/2] decoding (VAE)... (about 1m15s)"), std::string::npos) << text;
  EXPECT_NE(text.find("[2/2] writing...\n"), std::string::npos) << text;  // no estimate, none shown
  fs::remove(log);
}

}  // namespace
}  // namespace vgen
