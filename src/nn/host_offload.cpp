#include "nn/host_offload.h"

#include "core/error.h"

namespace vgen::nn {

HostOffload::HostOffload(std::vector<std::shared_ptr<Storage>> storages, Device device)
    : storages_(std::move(storages)), device_(device) {
  for (const std::shared_ptr<Storage>& s : storages_)
    VGEN_CHECK(s->device().is_cpu(), "HostOffload: a weight is on {}, not in host memory", s->device().str());
}

void HostOffload::upload() {
  if (resident_) return;
  host_.reserve(storages_.size());
  for (const std::shared_ptr<Storage>& s : storages_) {
    const int64_t n = static_cast<int64_t>(s->nbytes());
    Tensor on_device = Tensor::empty({n}, DType::U8, device_);
    on_device.copy_(Tensor::from_blob(s->data(), {n}, DType::U8, Device::cpu(), s));
    // The model's tensors share `s`: give it the device bytes, keep the host bytes aside.
    s->swap_contents(*on_device.storage());
    host_.push_back(on_device.storage());
  }
  resident_ = true;
}

void HostOffload::release() {
  if (!resident_) return;
  for (size_t i = 0; i < storages_.size(); ++i) storages_[i]->swap_contents(*host_[i]);
  host_.clear();  // the device copies, freed in stream order
  resident_ = false;
}

}  // namespace vgen::nn
