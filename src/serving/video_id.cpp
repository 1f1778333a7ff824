#include "serving/video_id.h"

#include <random>

namespace vgen::serving {

std::string new_video_id() {
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  // random_device reads the kernel's entropy pool: ids of restarted servers never repeat.
  thread_local std::random_device device;
  std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
  std::string id = "video_";
  for (int i = 0; i < 32; ++i) id += kAlphabet[pick(device)];
  return id;
}

bool is_valid_video_id(std::string_view id) {
  constexpr std::string_view kPrefix = "video_";
  if (id.substr(0, kPrefix.size()) != kPrefix) return false;
  const std::string_view rest = id.substr(kPrefix.size());
  if (rest.size() < 16 || rest.size() > 64) return false;
  for (char c : rest)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

}  // namespace vgen::serving
