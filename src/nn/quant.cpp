#include "nn/quant.h"

#include <fnmatch.h>

#include "core/error.h"

namespace vgen::nn {

QuantFormat quant_format(QuantAlgo algo) {
  switch (algo) {
    case QuantAlgo::FP8: return QuantFormat::Fp8PerTensor;
    case QuantAlgo::FP8Blockwise: return QuantFormat::Fp8Block;
    case QuantAlgo::NVFP4: return QuantFormat::Nvfp4;
    case QuantAlgo::None: break;
  }
  fail("quant_config.quant_algo: none has no quantized format");
}

bool quant_ignored(const QuantConfig& config, const std::string& name) {
  for (const std::string& pattern : config.ignore)
    if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

}  // namespace vgen::nn
