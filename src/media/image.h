// Still images: PNG (libpng), JPEG and WebP (libavcodec's mjpeg and libwebp encoders).
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

}  // namespace vgen::media
