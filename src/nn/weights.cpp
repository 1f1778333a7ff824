#include "nn/weights.h"

#include <vector>

#include "core/error.h"

namespace vgen::nn {

void Weights::check_all_used(const std::string& model, const std::string& config_path,
                             const std::function<bool(const std::string&)>& expected) const {
  std::vector<std::string> unused;
  for (const std::string& name : store_->unused())
    if (!expected || !expected(name)) unused.push_back(name);
  if (unused.empty()) return;
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 8; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
  if (unused.size() > 8) list += fmt::format(" and {} more", unused.size() - 8);
  fail("{}: {} unexpected tensor(s) in the checkpoint, not used by {} as configured by {}: {}", store_->source(),
       unused.size(), model, config_path, list);
}

}  // namespace vgen::nn
