#include "media/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace vgen::media {
namespace {

// The filters of Resample.c, with its constants and evaluation order (the double results
// decide the fixed-point weights, so they must round as Pillow's do).
double box_filter(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as in Pillow
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);  // truncated sinc
  return 0.0;
}

struct Filter {
  double (*filter)(double);
  double support;
};

Filter filter_of(Resampling r) {
  switch (r) {
    case Resampling::Nearest: break;  // not a convolution (resize_nearest)
    case Resampling::Box: return {box_filter, 0.5};
    case Resampling::Bilinear: return {bilinear_filter, 1.0};
    case Resampling::Hamming: return {hamming_filter, 1.0};
    case Resampling::Bicubic: return {bicubic_filter, 2.0};
    case Resampling::Lanczos: return {lanczos_filter, 3.0};
  }
  fail("resize: unknown resampling filter {}", static_cast<int>(r));
}

// 8 bits of result; weights can be negative or sum above 1 per tap, hence 2 bits of headroom.
constexpr int kPrecisionBits = 32 - 8 - 2;

uint8_t clip8(int value) { return static_cast<uint8_t>(std::clamp(value >> kPrecisionBits, 0, 255)); }

// The taps of one pass: for output position i, input positions [xmin[i], xmin[i] + count[i])
// with fixed-point weights k[i * ksize ...].
struct Coefficients {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int32_t> k;
};

// Resample.c's precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size).
Coefficients precompute_coeffs(int in_size, int out_size, const Filter& filter) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  double filterscale, scale;
  filterscale = scale = static_cast<double>(in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  const double inv_filterscale = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter.filter((x + xmin - center + 0.5) * inv_filterscale);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double normalized = ww != 0.0 ? w[x] / ww : w[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] = normalized < 0
                                                       ? static_cast<int32_t>(-0.5 + normalized * (1 << kPrecisionBits))
                                                       : static_cast<int32_t>(0.5 + normalized * (1 << kPrecisionBits));
    }
    c.xmin[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

// An image of `channels` interleaved uint8 samples per pixel.
struct Plane {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * channels; }
};

// Rows [offset, offset + rows) of `in`, resampled along x to c.xmin.size() columns.
Plane resample_horizontal(const Plane& in, int offset, int rows, const Coefficients& c) {
  Plane out{static_cast<int>(c.xmin.size()), rows, in.channels, {}};
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * out.channels);
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* line_in = in.row(yy + offset);
    uint8_t* line_out = out.row(yy);
    for (int xx = 0; xx < out.width; ++xx) {
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      for (int ch = 0; ch < in.channels; ++ch) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < c.count[xx]; ++x) ss += line_in[(x + c.xmin[xx]) * in.channels + ch] * k[x];
        line_out[xx * in.channels + ch] = clip8(ss);
      }
    }
  }
  return out;
}

// `in` resampled along y to c.xmin.size() rows (c.xmin relative to in's first row).
Plane resample_vertical(const Plane& in, const Coefficients& c) {
  Plane out{in.width, static_cast<int>(c.xmin.size()), in.channels, {}};
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * out.channels);
  const int samples = in.width * in.channels;
  for (int yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    uint8_t* line_out = out.row(yy);
    for (int s = 0; s < samples; ++s) {
      int ss = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y) ss += in.row(y + c.xmin[yy])[s] * k[y];
      line_out[s] = clip8(ss);
    }
  }
  return out;
}

// PIL's NEAREST resize: ImagingScaleAffine with a = in / out per axis: output pixel i reads
// input trunc(a/2 + i*a), the position accumulated by repeated addition as Pillow does; a
// position outside the input (rounding could only make one so at the far edge) gives 0, its fill.
Plane resize_nearest(const Plane& in, int xsize, int ysize) {
  const double ax = static_cast<double>(static_cast<float>(in.width)) / xsize;
  const double ay = static_cast<double>(static_cast<float>(in.height)) / ysize;
  const auto coord = [](double v, int size) {
    const int i = v < 0.0 ? -1 : static_cast<int>(v);
    return i < size ? i : -1;
  };
  std::vector<int> xin(xsize);
  double xo = ax * 0.5;
  for (int x = 0; x < xsize; ++x, xo += ax) xin[x] = coord(xo, in.width);
  Plane out{xsize, ysize, in.channels, {}};
  out.pixels.assign(static_cast<size_t>(xsize) * ysize * in.channels, 0);
  double yo = ay * 0.5;
  for (int y = 0; y < ysize; ++y, yo += ay) {
    const int yi = coord(yo, in.height);
    if (yi < 0) continue;
    for (int x = 0; x < xsize; ++x)
      if (xin[x] >= 0) std::memcpy(out.row(y) + x * in.channels, in.row(yi) + xin[x] * in.channels, in.channels);
  }
  return out;
}

}  // namespace

Resampling resampling_from_pil(int64_t code, const std::string& what) {
  switch (code) {
    case 0: return Resampling::Nearest;
    case 1: return Resampling::Lanczos;
    case 2: return Resampling::Bilinear;
    case 3: return Resampling::Bicubic;
    case 4: return Resampling::Box;
    case 5: return Resampling::Hamming;
    default:
      fail(
          "{}: resample {} is not a PIL filter vgen has (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, "
          "5 HAMMING)",
          what, code);
  }
}

Resampling resampling_from_name(const std::string& name, const std::string& what) {
  for (Resampling r : {Resampling::Nearest, Resampling::Lanczos, Resampling::Bilinear, Resampling::Bicubic,
                       Resampling::Box, Resampling::Hamming})
    if (name == resampling_name(r)) return r;
  fail("{}: resample \"{}\" is not supported (nearest, lanczos, bilinear, bicubic, box, hamming)", what, name);
}

const char* resampling_name(Resampling filter) {
  switch (filter) {
    case Resampling::Nearest: return "nearest";
    case Resampling::Lanczos: return "lanczos";
    case Resampling::Bilinear: return "bilinear";
    case Resampling::Bicubic: return "bicubic";
    case Resampling::Box: return "box";
    case Resampling::Hamming: return "hamming";
  }
  return "?";
}

Tensor resize(const Tensor& image, int64_t width, int64_t height, Resampling filter) {
  VGEN_CHECK(
      image.defined() && image.dtype() == DType::U8 && image.dim() == 3 && (image.size(2) == 3 || image.size(2) == 1),
      "resize: the image must be U8 [H, W, 3] (RGB) or [H, W, 1] (L), got {}",
      image.defined() ? image.str() : "an undefined tensor");
  VGEN_CHECK(image.size(0) > 0 && image.size(1) > 0, "resize: empty image {}", image.str());
  VGEN_CHECK(width > 0 && height > 0 && width <= (1 << 20) && height <= (1 << 20),
             "resize: the size must be positive (and at most 2^20), got {}x{}", width, height);
  const Tensor contiguous = image.to(Device::cpu()).contiguous();
  Plane in{static_cast<int>(image.size(1)), static_cast<int>(image.size(0)), static_cast<int>(image.size(2)), {}};
  const uint8_t* data = contiguous.data<uint8_t>();
  in.pixels.assign(data, data + contiguous.numel());
  const int xsize = static_cast<int>(width), ysize = static_cast<int>(height);
  const auto to_tensor = [](const Plane& plane) {
    Tensor t = Tensor::empty({plane.height, plane.width, plane.channels}, DType::U8);
    std::memcpy(t.data<uint8_t>(), plane.pixels.data(), plane.pixels.size());
    return t;
  };
  if (xsize == in.width && ysize == in.height) return to_tensor(in);  // PIL: a copy
  if (filter == Resampling::Nearest) return to_tensor(resize_nearest(in, xsize, ysize));
  const Filter f = filter_of(filter);

  // ImagingResampleInner with the whole image as the box.
  const bool need_horizontal = xsize != in.width, need_vertical = ysize != in.height;
  // Pillow runs the vertical pass first when the height shrinks more than twice the width.
  const bool horizontal_first = !((in.height - ysize) > 0 && (in.height - ysize) > (in.width - xsize) * 2);
  Plane out;
  if (horizontal_first) {
    if (need_horizontal) {
      // Only the rows the vertical pass reads go through the horizontal one.
      Coefficients vertical = precompute_coeffs(in.height, ysize, f);
      const int ybox_first = vertical.xmin.front(), ybox_last = vertical.xmin.back() + vertical.count.back();
      for (int& y : vertical.xmin) y -= ybox_first;
      out = resample_horizontal(in, ybox_first, ybox_last - ybox_first, precompute_coeffs(in.width, xsize, f));
      if (need_vertical) out = resample_vertical(out, vertical);
    } else if (need_vertical) {
      out = resample_vertical(in, precompute_coeffs(in.height, ysize, f));
    }
  } else {
    out = resample_vertical(in, precompute_coeffs(in.height, ysize, f));
    if (need_horizontal) out = resample_horizontal(out, 0, out.height, precompute_coeffs(in.width, xsize, f));
  }
  return to_tensor(out);
}

}  // namespace vgen::media
