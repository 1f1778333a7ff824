// transformers' UMT5EncoderModel (models/umt5/modeling_umt5.py), the text encoder of Wan: the
// T5 encoder stack of text/t5_encoder.h with a relative position bias table in every block.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/t5_encoder.h"

namespace vgen {

using UMT5Config = T5Config;

class UMT5EncoderModel final : public T5EncoderModel {
 public:
  // As T5EncoderModel::from_pretrained, for a config.json with model_type "umt5".
  static std::unique_ptr<UMT5EncoderModel> from_pretrained(const std::string& dir, DType dtype = DType::F32,
                                                           Device device = Device::cpu());

 private:
  UMT5EncoderModel(const std::string& dir, DType dtype, Device device) : T5EncoderModel(dir, "umt5", dtype, device) {}
};

// diffusers' WanPipeline._get_t5_prompt_embeds after the encoder: keeps the first lengths[b]
// positions of hidden[b] ([B, L, D]) and zeroes the rest (u[:v] re-padded with zeros).
Tensor zero_padded_positions(const Tensor& hidden, const std::vector<int64_t>& lengths);

}  // namespace vgen
