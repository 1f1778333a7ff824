// Pillow's Image.resize, bit for bit (libImaging/Resample.c of Pillow 13): the convolution
// resampling that diffusers' VaeImageProcessor and transformers' PIL image processors use.
//
// Separable passes over uint8 pixels: per output position a window of input pixels whose
// filter support is scaled by the downscale factor, the weights normalised to sum to 1 and
// converted to fixed point with 22 fractional bits; each pass rounds and clips to uint8.
// The horizontal pass runs first (over only the rows the vertical pass will read) unless the
// height shrinks more than twice as much as the width.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace vgen::media {

// PIL's Image.Resampling filters: NEAREST (PIL's scale-only affine transform, not the
// convolution) and those that resample by convolution (MKS2013 and MKS2021 are not implemented).
enum class Resampling { Nearest, Lanczos, Bilinear, Bicubic, Box, Hamming };

// PIL's integer codes (Image.Resampling: NEAREST 0, LANCZOS 1, BILINEAR 2, BICUBIC 3, BOX 4,
// HAMMING 5), as image processors' `resample` fields store them; `what` names the field in errors.
Resampling resampling_from_pil(int64_t code, const std::string& what);
// diffusers' names (its PIL_INTERPOLATION keys: "nearest", "lanczos", "bicubic", "bilinear",
// "box", "hamming").
Resampling resampling_from_name(const std::string& name, const std::string& what);
const char* resampling_name(Resampling filter);

// PIL's image.resize((width, height), resample=filter) of a U8 [H, W, C] image: C = 3 (mode
// RGB) or 1 (mode L), channels filtered independently as PIL does for those modes (PIL
// premultiplies RGBA by its alpha first, which this does not) -> U8 [height, width, C]. The
// same size returns a copy, as PIL does.
Tensor resize(const Tensor& image, int64_t width, int64_t height, Resampling filter);

}  // namespace vgen::media
