// The tensors a model is built from: one checkpoint component (a WeightStore) read in one
// dtype onto one device. Every nn module loads through it, so that a model's check for
// leftover checkpoint tensors sees every weight its modules took.
#pragma once

#include <functional>
#include <string>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace vgen::nn {

class Weights {
 public:
  // `store` must outlive this object and the modules being built (not the built modules).
  Weights(const WeightStore& store, DType dtype, Device device) : store_(&store), dtype_(dtype), device_(device) {}

  const WeightStore& store() const { return *store_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // The same checkpoint read in another dtype (the modules diffusers keeps in float32).
  Weights as(DType dtype) const { return Weights(*store_, dtype, device_); }

  // Tensor `name`, checked against `shape`, converted to dtype() on device(); a missing
  // tensor or another shape is an error naming the tensor and the checkpoint.
  Tensor load(const std::string& name, const Shape& shape) const { return store_->load(name, shape, dtype_, device_); }

  // Fails when the checkpoint holds tensors that no module loaded, except those `expected`
  // accepts (e.g. an encoder the model does not run): the config describes another model than
  // the weights. The error names the folder, `model`, `config_path` and up to 8 tensors.
  void check_all_used(const std::string& model, const std::string& config_path,
                      const std::function<bool(const std::string&)>& expected = {}) const;

 private:
  const WeightStore* store_;
  DType dtype_;
  Device device_;
};

}  // namespace vgen::nn
