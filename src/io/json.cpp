#include "io/json.h"

#include <filesystem>
#include <fstream>

namespace vgen {

Json read_json_file(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("{}: file not found", path);
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  try {
    return Json::parse(in);
  } catch (const Json::parse_error& e) {
    fail("{}: malformed JSON ({})", path, e.what());
  }
}

}  // namespace vgen
