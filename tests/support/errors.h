// Catching the vgen::Error a call throws, for tests that check what the message names.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "core/error.h"

namespace vgen::testing {

// Runs f and returns the vgen::Error message; a test failure and "(no error)" when none is thrown.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no vgen::Error thrown";
  return "(no error)";
}

// Expects f to throw a vgen::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  const std::string message = error_of(f);
  EXPECT_NE(message.find(needle), std::string::npos) << message;
}

}  // namespace vgen::testing
