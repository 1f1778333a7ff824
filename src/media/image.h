// Still images: PNG (libpng), JPEG and WebP (libavcodec's mjpeg and libwebp encoders), and
// decoding of the three (libpng, libjpeg-turbo, libwebp) to the pixels PIL gives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "media/metadata.h"

namespace vgen::media {

enum class ImageFormat { PNG, JPEG, WEBP };

// "png", "jpeg" / "jpg", "webp" in any case; the error lists the valid names.
ImageFormat parse_image_format(const std::string& name);
// From the file extension (".png", ".jpg", ".jpeg", ".webp"); the error names the path.
ImageFormat image_format_from_path(const std::string& path);
std::string_view image_format_name(ImageFormat format);       // "png", "jpeg", "webp"
std::string_view image_format_mime_type(ImageFormat format);  // "image/png", ...

// image: U8 [H, W, 3] RGB (e.g. one frame of video_to_uint8_frames), any strides.
// metadata: one iTXt chunk per entry (read_png_metadata reads them back).
std::vector<uint8_t> encode_png(const Tensor& image, const Metadata& metadata = {});
void write_png(const std::string& path, const Tensor& image, const Metadata& metadata = {});

// quality 1..100 (higher: better, larger); PNG is lossless and ignores it. JPEG: 4:4:4,
// quality mapped linearly onto mjpeg's qscale 31..1. WebP: lossy, libwebp's own quality.
std::vector<uint8_t> encode_image(const Tensor& image, ImageFormat format, int quality = 90);
// Format from the extension; written to a temporary file beside `path`, then renamed.
// metadata goes into PNGs only (JPEG and WebP are written without it).
void write_image(const std::string& path, const Tensor& image, int quality = 90, const Metadata& metadata = {});

// Larger images are refused before their pixels are allocated (16384 x 16384).
inline constexpr int64_t kMaxDecodedPixels = int64_t{1} << 28;

// The pixels of a PNG, JPEG or WebP file (recognised by its first bytes, whatever `name`
// says) as PIL's Image.open(f).convert("RGB") gives them -> U8 [H, W, 3]:
//   PNG: palette and gray expanded, alpha dropped (not composited), 16-bit RGB/RGBA/LA
//        samples cut to their high byte and 16-bit gray clipped to 255 (PIL's I;16 -> RGB), no
//        gamma applied.
//   JPEG: libjpeg-turbo, ISLOW IDCT, fancy upsampling (PIL's defaults); grayscale replicated;
//        CMYK/YCCK read as PIL does (inverted, Adobe convention, then its cmyk2rgb); EXIF
//        orientation is not applied (PIL's open/convert do not either).
//   WebP: libwebp's default decode (fancy upsampling), alpha dropped; animations are refused.
// A file that does not decode, is cut short, is of another format or holds more than
// kMaxDecodedPixels pixels is an Error naming `name`.
Tensor decode_image(const uint8_t* data, size_t size, const std::string& name);
// decode_image of the file at `path`.
Tensor read_image(const std::string& path);

}  // namespace vgen::media
