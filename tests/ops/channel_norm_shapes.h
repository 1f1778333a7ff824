// The channel-norm shapes both op tests walk (values in backend_ops_test.cpp, layouts in
// cuda_backend_test.cpp): C a multiple of the vector width or not (5, 12); rows held by groups
// of 2 to 32 lanes, a last warp only partly used (9 rows), and rows too long for registers (1040).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace vgen::testing {

inline const std::vector<Shape> kChannelNormShapes = {{2, 12, 3, 5, 8}, {1, 5, 2, 3, 7},  {1, 384, 2, 6, 10},
                                                      {1, 96, 1, 4, 4}, {1, 96, 1, 3, 3}, {1, 192, 1, 5, 1},
                                                      {1, 1040, 1, 2, 3}};

}  // namespace vgen::testing
