// The tensors a model is built from: one checkpoint component (a WeightStore) read in one
// dtype onto one device. Every nn module loads through it, so that a model's check for
// leftover checkpoint tensors sees every weight its modules took.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "config/engine_config.h"
#include "io/safetensors.h"
#include "nn/lora.h"

namespace vgen::nn {

class Weights {
 public:
  // `store` must outlive this object and the modules being built (not the built modules).
  // `lora`: adapters merged into the tensors they target as those load (nullptr: none).
  // `quant`: how the nn::Linear layers built from these weights are quantized (nullptr or
  // quant_algo none: they are not; nn/quant.h), after the LoRA merge.
  Weights(const WeightStore& store, DType dtype, Device device, std::shared_ptr<const LoraSet> lora = nullptr,
          std::shared_ptr<const QuantConfig> quant = nullptr)
      : store_(&store), dtype_(dtype), device_(device), lora_(std::move(lora)), quant_(std::move(quant)) {}

  const WeightStore& store() const { return *store_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  // The same checkpoint read in another dtype (the modules diffusers keeps in float32: they
  // stay unquantized, so the quantization is dropped).
  Weights as(DType dtype) const { return Weights(*store_, dtype, device_, lora_); }
  // The same weights in float32 on the host, LoRA merged (what quantization starts from).
  Weights on_host_f32() const { return Weights(*store_, DType::F32, Device::cpu(), lora_); }
  // The linear layers' quantization (nullptr: none).
  const QuantConfig* quant() const { return quant_ && quant_->enabled() ? quant_.get() : nullptr; }
  const LoraSet* lora() const { return lora_.get(); }

  // Tensor `name`, checked against `shape`, converted to dtype() on device(); a missing
  // tensor or another shape is an error naming the tensor and the checkpoint. A tensor the
  // LoRA adapters target is merged with them in float32 on the host first.
  Tensor load(const std::string& name, const Shape& shape) const;

  // Fails when the checkpoint holds tensors that no module loaded, except those `expected`
  // accepts (e.g. an encoder the model does not run): the config describes another model than
  // the weights. The error names the folder, `model`, `config_path` and up to 8 tensors.
  // Then fails when a LoRA update was merged into no tensor (LoraSet::check_all_merged).
  void check_all_used(const std::string& model, const std::string& config_path,
                      const std::function<bool(const std::string&)>& expected = {}) const;

 private:
  const WeightStore* store_;
  DType dtype_;
  Device device_;
  std::shared_ptr<const LoraSet> lora_;
  std::shared_ptr<const QuantConfig> quant_;
};

}  // namespace vgen::nn
