#include "ops/sage_attention.h"

#include <fmt/format.h>

namespace vgen::sage {

std::string rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  if (bias.defined()) return "takes no bias";
  for (const Tensor* t : {&q, &k, &v}) {
    if (!t->defined() || t->dim() != 4) return "needs [B, H, S, D] inputs";
    if (t->dtype() != DType::BF16) return fmt::format("takes BF16 inputs only (not {})", dtype_name(t->dtype()));
    if (t->size(3) != kHeadDim) return fmt::format("takes head dim {} only (not {})", kHeadDim, t->size(3));
    if (t->size(0) != q.size(0) || t->size(1) != q.size(1)) return "needs equal batch and head counts";
  }
  if (k.size(2) != v.size(2) || k.size(2) == 0) return "needs equal, non-zero key and value lengths";
  return "";
}

}  // namespace vgen::sage
