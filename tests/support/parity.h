// Helpers shared by the parity tests: fixture paths, reference tensors, error metrics.
#pragma once

#include <cmath>
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
  const std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name() + "_" : "";
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

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double m = 0.0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(x[i]) - y[i]));
  return m;
}

}  // namespace vgen::testing
