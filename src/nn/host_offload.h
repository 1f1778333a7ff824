// Weights that live in host memory and visit a device for their turn: the idle expert of a
// two-expert model (Wan2.2 A14B) on a GPU that cannot hold both. The model is loaded on the
// host; upload() copies every weight to the device in place (the model's tensors follow their
// storage), release() frees the device copies and the tensors view their host bytes again
// (weights never change, so nothing is copied back).
#pragma once

#include <memory>
#include <vector>

#include "core/tensor.h"

namespace vgen::nn {

class HostOffload {
 public:
  HostOffload() = default;
  // `storages`: what loading the model kept (StorageCapture::live()), all in host memory.
  HostOffload(std::vector<std::shared_ptr<Storage>> storages, Device device);

  bool defined() const { return !storages_.empty(); }
  bool resident() const { return resident_; }

  // Copies the weights to the device, in the order of the calling thread's context (its
  // stream on a GPU); returns once the copies are issued.
  void upload();
  // Frees the device copies (stream-ordered: work already issued that reads them completes).
  void release();

 private:
  std::vector<std::shared_ptr<Storage>> storages_;
  // While resident: the host images, swapped out of storages_.
  std::vector<std::shared_ptr<Storage>> host_;
  Device device_;
  bool resident_ = false;
};

}  // namespace vgen::nn
