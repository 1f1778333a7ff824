#include "nn/weights.h"

#include <vector>

#include "core/error.h"

namespace vgen::nn {

Tensor Weights::load(const std::string& name, const Shape& shape) const {
  if (!lora_ || !lora_->touches(name)) return store_->load(name, shape, dtype_, device_);
  // Merged in float32 where the weight will live: on a GPU the products run there in true FP32
  // (a 14B model's ~400 rank-64 products took 47 s on the host of an H200 machine). The weight
  // travels in its stored dtype and widens there (exact): widening 14B bf16 weights to float32
  // on the host and uploading twice the bytes cost 11 s at 14B on an H200 machine.
  const DType stored = store_->contains(name) ? store_->info(name).dtype : dtype_;
  const bool moves_as_stored = stored == DType::BF16 || stored == DType::F16 || stored == DType::F32;
  const Tensor w = store_->load(name, shape, moves_as_stored ? stored : DType::F32, device_);
  return lora_->merge(name, w.to(DType::F32)).to(dtype_);
}

void Weights::check_all_used(const std::string& model, const std::string& config_path,
                             const std::function<bool(const std::string&)>& expected) const {
  std::vector<std::string> unused;
  for (const std::string& name : store_->unused())
    if (!expected || !expected(name)) unused.push_back(name);
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 8; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
    if (unused.size() > 8) list += fmt::format(" and {} more", unused.size() - 8);
    fail("{}: {} unexpected tensor(s) in the checkpoint, not used by {} as configured by {}: {}", store_->source(),
         unused.size(), model, config_path, list);
  }
  if (lora_) lora_->check_all_merged(model);
}

}  // namespace vgen::nn
