#include "text/umt5_encoder.h"

#include "core/error.h"

namespace vgen {

std::unique_ptr<UMT5EncoderModel> UMT5EncoderModel::from_pretrained(const std::string& dir, DType dtype,
                                                                    Device device) {
  return std::unique_ptr<UMT5EncoderModel>(new UMT5EncoderModel(dir, dtype, device));
}

Tensor zero_padded_positions(const Tensor& hidden, const std::vector<int64_t>& lengths) {
  VGEN_CHECK(hidden.dim() == 3 && hidden.size(0) == static_cast<int64_t>(lengths.size()),
             "zero_padded_positions: hidden {} for {} lengths", hidden.str(), lengths.size());
  Tensor out = Tensor::zeros(hidden.shape(), hidden.dtype(), hidden.device());
  for (int64_t b = 0; b < hidden.size(0); ++b) {
    const int64_t n = lengths[static_cast<size_t>(b)];
    VGEN_CHECK(n >= 0 && n <= hidden.size(1), "zero_padded_positions: length {} of item {} outside [0, {}]", n, b,
               hidden.size(1));
    if (n > 0) out.select(0, b).narrow(0, 0, n).copy_(hidden.select(0, b).narrow(0, 0, n));
  }
  return out;
}

}  // namespace vgen
