// Video job ids: "video_" + 32 random letters and digits (about 190 bits, unguessable).
// Ids from clients are checked strictly before they reach the database or a file name,
// so no path trick ("..", "/", "%2F") can name anything but a job.
#pragma once

#include <string>
#include <string_view>

namespace vgen::serving {

std::string new_video_id();

// ^video_[A-Za-z0-9]{16,64}$
bool is_valid_video_id(std::string_view id);

}  // namespace vgen::serving
