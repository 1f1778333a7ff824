// Helpers shared by the parity tests: fixture paths, reference tensors, error metrics.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace vgen::testing {

inline std::string fixture(const std::string& relative) { return std::string(VGEN_FIXTURES_DIR) + "/" + relative; }

// Reference tensors saved by tools/fixtures/make_wan_fixtures.py.
inline WeightStore reference(const std::string& relative) { return WeightStore::open_files({fixture(relative)}); }

// A path in the test temp dir named after the running test (suite, test, then `stem`): ctest
// runs each test as a process of its own, in parallel, and two tests writing one path race (one
// rename finds its temporary file gone).
inline std::string test_temp_path(const std::string& stem) {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name() + "_" : "";
  for (char& c : name)
    if (c == '/') c = '_';  // parameterized tests: "Prefix/Suite", "Test/0"
  return ::testing::TempDir() + "/vgen_" + name + stem;
}

// ||a - b|| / ||b||, in double.
inline double rel_l2(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape()) << a.str() << " vs " << b.str();
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    num += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    den += static_cast<double>(y[i]) * y[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// A bf16 forward held to diffusers' own bf16 run: no further from the float32 `sample` than
// diffusers' `sample_bf16` is, times `slack` (25% by default: on models this small, which side's
// roundings land better is partly luck). `out` may live on any device. Prints both errors.
inline void expect_as_close_as_diffusers_bf16(const std::string& what, const Tensor& out, const Tensor& sample,
                                              const Tensor& sample_bf16, double slack = 1.25) {
  const double ours = rel_l2(out.to(Device::cpu()).to(DType::F32), sample);
  const double theirs = rel_l2(sample_bf16.to(DType::F32), sample);
  std::printf("[ %s ] bf16 vs float32: vgen %.4g, diffusers bf16 %.4g\n", what.c_str(), ours, theirs);
  EXPECT_LT(ours, slack * theirs) << what;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double m = 0.0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(x[i]) - y[i]));
  return m;
}

}  // namespace vgen::testing
