#include "media/image.h"

#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "media/temp_file.h"

#ifdef VGEN_WITH_LIBAV
#include "media/libav.h"
extern "C" {
#include <libavutil/opt.h>
}
#endif

namespace vgen::media {
namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// CPU, contiguous U8 [H, W, 3].
Tensor checked_image(const Tensor& image, const std::string& what) {
  VGEN_CHECK(image.defined() && image.dtype() == DType::U8 && image.dim() == 3 && image.size(2) == 3,
             "{}: the image must be a U8 [H, W, 3] RGB tensor, got {}", what,
             image.defined() ? image.str() : "an undefined tensor");
  VGEN_CHECK(image.size(0) > 0 && image.size(1) > 0, "{}: empty image {}", what, image.str());
  return image.to(Device::cpu()).contiguous();
}

#ifdef VGEN_WITH_LIBAV
// One picture through a libavcodec encoder: RGB24 -> pix_fmt -> encoder -> its packet.
std::vector<uint8_t> encode_with_libav(const Tensor& rgb, libav::CodecContext ctx, AVPixelFormat pix_fmt,
                                       int colorspace, bool full_range, int frame_quality, const std::string& what) {
  const int height = static_cast<int>(rgb.size(0)), width = static_cast<int>(rgb.size(1));
  ctx->width = width;
  ctx->height = height;
  ctx->pix_fmt = pix_fmt;
  ctx->time_base = AVRational{1, 1};  // required by the API, meaningless for one picture
  ctx->color_range = full_range ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG;
  libav::open_encoder(ctx.get(), what);

  libav::Frame frame = libav::alloc_frame(pix_fmt, width, height, what);
  libav::RgbConverter(width, height, pix_fmt, colorspace, full_range, what).convert(rgb.data<uint8_t>(), frame.get());
  frame->pts = 0;
  frame->quality = frame_quality;
  libav::Packet packet(av_packet_alloc());
  VGEN_CHECK(packet != nullptr, "{}: out of memory allocating a packet", what);
  std::vector<uint8_t> bytes;
  const auto append = [&](AVPacket* p) { bytes.insert(bytes.end(), p->data, p->data + p->size); };
  libav::encode(ctx.get(), frame.get(), packet.get(), append, what);
  libav::encode(ctx.get(), nullptr, packet.get(), append, what);
  VGEN_CHECK(!bytes.empty(), "{}: the '{}' encoder produced no data", what, ctx->codec->name);
  return bytes;
}

std::vector<uint8_t> encode_jpeg(const Tensor& rgb, int quality, const std::string& what) {
  libav::CodecContext ctx = libav::alloc_encoder("mjpeg", what);
  // Fixed quantizer: quality 100 -> qscale 1 (finest), 1 -> 31.
  const int qscale = static_cast<int>(std::lround(1 + (100 - quality) * 30 / 99.0));
  ctx->flags |= AV_CODEC_FLAG_QSCALE;
  ctx->global_quality = FF_QP2LAMBDA * qscale;
  ctx->qmin = 1;  // the default floor of 2 would clamp qscale 1
  // JFIF: BT.601 matrix, full-range levels. 4:4:4 as the ffmpeg tool picks for RGB input:
  // 4:2:0 would smear the fine colour detail of generated images.
  return encode_with_libav(rgb, std::move(ctx), AV_PIX_FMT_YUV444P, SWS_CS_ITU601, /*full_range=*/true,
                           FF_QP2LAMBDA * qscale, what);
}

std::vector<uint8_t> encode_webp(const Tensor& rgb, int quality, const std::string& what) {
  libav::CodecContext ctx = libav::alloc_encoder("libwebp", what);
  av_opt_set_double(ctx->priv_data, "quality", quality, 0);
  // Lossy WebP is VP8: BT.601 matrix, limited-range levels.
  return encode_with_libav(rgb, std::move(ctx), AV_PIX_FMT_YUV420P, SWS_CS_ITU601, /*full_range=*/false, 0, what);
}
#else
[[noreturn]] std::vector<uint8_t> encode_without_libav(const char* format, const std::string& what) {
  fail("{}: {} needs FFmpeg's libraries, which this build of vgen does not have (PNG works)", what, format);
}
std::vector<uint8_t> encode_jpeg(const Tensor&, int, const std::string& what) { encode_without_libav("JPEG", what); }
std::vector<uint8_t> encode_webp(const Tensor&, int, const std::string& what) { encode_without_libav("WebP", what); }
#endif

}  // namespace

ImageFormat parse_image_format(const std::string& name) {
  const std::string key = lowercase(name);
  if (key == "png") return ImageFormat::PNG;
  if (key == "jpeg" || key == "jpg") return ImageFormat::JPEG;
  if (key == "webp") return ImageFormat::WEBP;
  fail("unknown image format '{}' (valid: png, jpeg, jpg, webp)", name);
}

ImageFormat image_format_from_path(const std::string& path) {
  const std::string extension = std::filesystem::path(path).extension().string();
  VGEN_CHECK(!extension.empty(), "'{}': no file extension to choose the image format (valid: .png, .jpeg, .jpg, .webp)",
             path);
  try {
    return parse_image_format(extension.substr(1));
  } catch (const Error&) {
    fail("'{}': unknown image extension '{}' (valid: .png, .jpeg, .jpg, .webp)", path, extension);
  }
}

std::string_view image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::PNG: return "png";
    case ImageFormat::JPEG: return "jpeg";
    case ImageFormat::WEBP: return "webp";
  }
  return "";
}

std::string_view image_format_mime_type(ImageFormat format) {
  switch (format) {
    case ImageFormat::PNG: return "image/png";
    case ImageFormat::JPEG: return "image/jpeg";
    case ImageFormat::WEBP: return "image/webp";
  }
  return "";
}

std::vector<uint8_t> encode_png(const Tensor& image, const Metadata& metadata) {
  const Tensor rgb = checked_image(image, "encoding PNG");
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(rgb.size(1));
  png.height = static_cast<png_uint_32>(rgb.size(0));
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX(png);
  std::vector<uint8_t> bytes(size);
  const png_int_32 row_stride = static_cast<png_int_32>(3 * rgb.size(1));
  VGEN_CHECK(png_image_write_to_memory(&png, bytes.data(), &size, 0, rgb.data<uint8_t>(), row_stride, nullptr),
             "encoding PNG: libpng: {}", png.message);
  bytes.resize(size);
  return metadata.empty() ? bytes : add_png_text(bytes, metadata);
}

void write_png(const std::string& path, const Tensor& image, const Metadata& metadata) {
  try {
    write_file_atomic(path, encode_png(image, metadata));
  } catch (const Error& e) {
    fail("writing '{}': {}", path, e.what());
  }
}

std::vector<uint8_t> encode_image(const Tensor& image, ImageFormat format, int quality) {
  const std::string what = fmt::format("encoding {}", image_format_name(format));
  VGEN_CHECK(quality >= 1 && quality <= 100, "{}: quality must be in 1..100, got {}", what, quality);
  if (format == ImageFormat::PNG) return encode_png(image);
  const Tensor rgb = checked_image(image, what);
  return format == ImageFormat::JPEG ? encode_jpeg(rgb, quality, what) : encode_webp(rgb, quality, what);
}

void write_image(const std::string& path, const Tensor& image, int quality, const Metadata& metadata) {
  const ImageFormat format = image_format_from_path(path);
  try {
    write_file_atomic(path, format == ImageFormat::PNG ? encode_png(image, metadata) : encode_image(image, format, quality));
  } catch (const Error& e) {
    fail("writing '{}': {}", path, e.what());
  }
}

}  // namespace vgen::media
