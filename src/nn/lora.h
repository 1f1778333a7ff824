// LoRA adapters merged into a model's weights while they load, as diffusers'
// `pipe.load_lora_weights(file)` + `pipe.fuse_lora(lora_scale=scale)` leaves them:
//
//   W' = W + scale * (B @ A)        (peft's Linear.merge: get_delta_weight, scaling = 1 * scale)
//   b' = b + scale * lora_B.bias    (peft's lora_bias, from `diff_b` keys)
//
// where A (lora_A / lora_down) and B (lora_B / lora_up) are the file's, with `.alpha` folded
// into them the way diffusers' converters fold it (A * scale_down, B * scale_up, whose product
// is alpha / rank): diffusers then loads every Wan LoRA with lora_alpha = rank (scaling 1),
// except a diffusers-saved file whose `lora_adapter_metadata` gives lora_alpha and r
// (W' = W + scale * lora_alpha / r * (B @ A)).
//
// Key formats (diffusers' WanLoraLoaderMixin.lora_state_dict):
//  - original Wan / ComfyUI (`diffusion_model.` prefix): _convert_non_diffusers_wan_lora_to_diffusers
//  - musubi-tuner / kohya (`lora_unet_` prefix): _convert_musubi_wan_lora_to_diffusers
//  - diffusers / PEFT (`transformer.NAME.lora_A.weight`, `lora_B.weight`, `lora_B.bias`); a file
//    with no `transformer.` key is read as bare module names (diffusers would load nothing).
// The merge runs in float32 on the weight's device (true FP32 products on a GPU, no TF32) before
// the weight is converted to the compute dtype, so it happens before any later quantization;
// CPU and GPU differ only in the summation order of the rank-r products.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen::nn {

// One adapter file and the `lora_scale` it is fused with.
struct LoraAdapterSpec {
  std::string path;
  double scale = 1.0;
  bool operator==(const LoraAdapterSpec&) const = default;
};

// The largest |lora_scale| accepted (CLI and server alike).
constexpr double kMaxLoraScale = 100.0;

// "FILE" or "FILE:SCALE" (the CLI's --lora); a SCALE that is not a finite number in
// [-kMaxLoraScale, kMaxLoraScale] is an error. A path that itself holds ':' (an existing file)
// is taken whole when what follows its last ':' is not a number.
LoraAdapterSpec parse_lora_adapter_spec(const std::string& text);

// What one adapter changes in one module (diffusers' module name, e.g. "blocks.0.attn1.to_q").
struct LoraUpdate {
  std::string file;
  std::string key;  // the file's key it came from, for errors
  Tensor down;      // lora_A [rank, in_features] (float32, alpha folded in), undefined for a bias-only update
  Tensor up;        // lora_B [out_features, rank]
  Tensor bias;      // lora_B.bias [out_features], or undefined
  std::string bias_key;  // the file's key of the bias, for errors
  double alpha_scale = 1.0;  // peft's lora_alpha / r: 1 unless the file's lora_adapter_metadata says otherwise
  double scale = 1.0;        // the adapter's lora_scale
};

// The modules' updates of one file, converted to diffusers' module names.
struct LoraFile {
  std::map<std::string, LoraUpdate> modules;
  // Keys no converter maps (diffusers raises on them); an error unless ignore_unmatched.
  std::vector<std::string> unmatched;
};

// Reads and converts one file; a corrupt file, a non-float tensor, half of a pair, or A and B
// of different ranks is an error naming the file and the tensor.
LoraFile read_lora_file(const std::string& path);

// The adapters of one model, in order; consulted by nn::Weights::load for every tensor.
class LoraSet {
 public:
  LoraSet(const std::vector<LoraAdapterSpec>& adapters, bool ignore_unmatched);

  // Whether a tensor ("blocks.0.attn1.to_q.weight" / ".bias") has updates.
  bool touches(const std::string& tensor_name) const;
  // `value` (float32, on any device) with every adapter's update merged in, in order; a shape
  // that does not match is an error naming the file and the LoRA tensor.
  Tensor merge(const std::string& tensor_name, Tensor value) const;
  // Fails, naming the files and up to 8 modules, when an update was never merged (the LoRA
  // targets modules `model` does not have); ignore_unmatched drops them with a warning.
  void check_all_merged(const std::string& model) const;

 private:
  std::vector<std::unique_ptr<LoraUpdate>> updates_;
  // tensor name -> the updates of it: "X.weight" those with lora_A/lora_B, "X.bias" those with a bias.
  std::map<std::string, std::vector<const LoraUpdate*>> targets_;
  bool ignore_unmatched_;
  mutable std::set<std::string> merged_;
};

}  // namespace vgen::nn
