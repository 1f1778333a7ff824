// Boolean switches read from the environment (VGEN_ALLOW_TF32, VGEN_CONV_AUTOTUNE, ...).
#pragma once

#include <cstdlib>
#include <cstring>

namespace vgen {

// "1" is true, "0" is false; unset (or any other value) gives `fallback`.
inline bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v != nullptr && std::strcmp(v, "1") == 0) return true;
  if (v != nullptr && std::strcmp(v, "0") == 0) return false;
  return fallback;
}

}  // namespace vgen
