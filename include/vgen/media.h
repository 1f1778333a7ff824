// Writing what VisualGen returns: MP4 (H.264), PNG/JPEG/WebP, frame conversion, and the
// generation metadata stored in outputs. `#include <vgen/media.h>`.
#pragma once

#include "media/frames.h"
#include "media/image.h"
#include "media/metadata.h"
#include "media/mp4.h"
