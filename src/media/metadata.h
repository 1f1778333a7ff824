// Text metadata carried inside output files (what made them: prompt, seed, model, ...):
// PNG iTXt chunks and MP4 metadata tags, written and read back.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vgen::media {

// (key, value) pairs in order; keys are ASCII words (PNG keywords: 1-79 characters), values
// UTF-8 text.
using Metadata = std::vector<std::pair<std::string, std::string>>;

// PNG bytes with one uncompressed iTXt chunk per entry inserted after IHDR. Throws naming a key
// that PNG cannot hold.
std::vector<uint8_t> add_png_text(const std::vector<uint8_t>& png, const Metadata& metadata);
// The tEXt and uncompressed iTXt chunks of a PNG file (zTXt and compressed iTXt are skipped);
// throws naming `path` when it is not a PNG.
Metadata read_png_metadata(const std::string& path);
// The metadata tags of an MP4 (or any container FFmpeg reads): the keys vgen wrote and the
// muxer's own (major_brand, encoder, ...). Needs FFmpeg's libraries.
Metadata read_video_metadata(const std::string& path);

}  // namespace vgen::media
