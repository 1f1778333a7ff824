// ExecutionSettings from the environment and their validation when a context is built.
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "core/error.h"
#include "core/execution_context.h"

namespace vgen {
namespace {

// Sets an environment variable for a scope, restoring what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ExecutionSettings, ConvKernelFromVgenConvCutlass) {
  {
    ScopedEnv env("VGEN_CONV_CUTLASS", "0");
    EXPECT_EQ(ExecutionSettings::from_environment().conv_kernel, "cudnn");
  }
  {
    ScopedEnv env("VGEN_CONV_CUTLASS", "force");
    EXPECT_EQ(ExecutionSettings::from_environment().conv_kernel, "cutlass");
  }
  {
    ScopedEnv env("VGEN_CONV_CUTLASS", "1");
    EXPECT_EQ(ExecutionSettings::from_environment().conv_kernel, "auto");
  }
  EXPECT_EQ(ExecutionSettings{}.conv_kernel, "cudnn");  // the race is opt-in (it did not speed up the decode)
}

TEST(ExecutionSettings, UnknownConvKernelIsRejected) {
  ExecutionSettings s;
  s.conv_kernel = "cutlass:128x128x64";
  EXPECT_NO_THROW(ExecutionContext(Device::cpu(), s));
  s.conv_kernel = "winograd";
  EXPECT_THROW(ExecutionContext(Device::cpu(), s), Error);
}

}  // namespace
}  // namespace vgen
