// Request bodies of the OpenAI-compatible endpoints -> generation parameters.
//
// Bodies arrive as JSON or as multipart/form-data (where every value is text and numbers are
// parsed from it). Unknown fields are a 422; a value of the wrong type or out of range is a
// 400 naming the field; the pipeline's own validation (resolve) is a 400 with its message.
//
// Video length: `num_frames` when given, else from `seconds` (see frames_for_seconds), else
// the model's default. Frame rate: `fps` when given, else the model's (its capabilities).
// Seed: `seed` when given, else (absent, or -1 as with the CLI's --seed -1) a random one
// (returned in the Video object).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "media/image.h"
#include "pipelines/pipeline.h"

namespace vgen::serving {

// A JSON request has no files: its fields (two prompts of at most 4000 characters, escaped
// as up to 6 bytes each, and a few numbers) fit in far less than the multipart body limit.
// The server refuses larger JSON bodies before reading them; the parser's tree takes ~16x
// the text, so this also bounds each request's parse.
constexpr size_t kMaxJsonBytes = 256u << 10;

// One part of a multipart/form-data body.
struct FormPart {
  std::string name;
  std::string filename;  // empty for a plain field
  std::string content_type;
  std::string content;
};

// The fields of a request body, with typed accessors that answer 400 naming the field.
class RequestFields {
 public:
  // 400 unless `body` is one JSON object.
  static RequestFields from_json(const std::string& body);
  static RequestFields from_form(std::vector<FormPart> parts);

  // 422 naming the first field whose name is not in `accepted`.
  void reject_unknown(const std::vector<std::string>& accepted) const;

  bool has(const std::string& name) const;
  std::optional<std::string> string(const std::string& name) const;
  std::optional<int64_t> integer(const std::string& name, int64_t min, int64_t max) const;
  std::optional<uint64_t> unsigned_integer(const std::string& name) const;
  // Whether field `name` is the integer `value` (a JSON integer, or a form field's exact text).
  bool is_integer(const std::string& name, int64_t value) const;
  // A finite number in [min, max]; `accept_text` also takes a JSON string holding a number
  // (the SDK sends `seconds` as "4").
  std::optional<double> number(const std::string& name, double min, double max, bool accept_text = false) const;
  // A list of 1..max_count finite numbers: a JSON array of numbers, or in a form the text
  // "a,b,c" (comma-separated, no empty items). Ranges and order are the pipeline's to check.
  std::optional<std::vector<double>> number_list(const std::string& name, size_t max_count) const;
  // File parts named `name` (multipart only; a JSON body has none).
  std::vector<const FormPart*> files(const std::string& name) const;

 private:
  bool form_ = false;
  nlohmann::json json_;
  std::vector<FormPart> parts_;

  // The single text value of a form field (400 when repeated).
  std::optional<std::string> form_text(const std::string& name) const;
};

// What the server knows about the model besides its pipeline (whose capabilities() give
// its tasks, frame rate and frame grid).
struct ModelInfo {
  std::string id;  // what /v1/models lists and requests may name
  // LoRA adapters a request may name (`lora`, `lora_2`): file stem -> path (vgen serve --lora-dir).
  std::map<std::string, std::string> adapters;
  // The server's step caching (engine YAML cache_config): what requests start from.
  CacheConfig cache;
};

// The LoRA adapters a request asks for, as text: "NAME[:SCALE][,NAME[:SCALE]...]" (the names of
// ModelInfo::adapters). Empty: none (the base model).
struct AdapterRequest {
  std::optional<std::string> lora, lora_2;
};

// The adapters a plan runs with (paths and scales); the worker switches the pipeline to them.
struct AdapterPlan {
  std::vector<nn::LoraAdapterSpec> lora, lora_2;
};

// "WxH" (width first) or "auto" (nullopt: the model's default).
std::optional<std::pair<int64_t, int64_t>> parse_size(const std::string& text, const std::string& field);

// Frames for `seconds` at `fps` on the model's grid of frame_grid * k + 1 frames (frame_grid:
// the pipeline's capabilities().temporal_multiple):
//   n = round(seconds * fps), at least 1 (halves round up)
//   k = floor((n - 1) / frame_grid + 1/2)  (the nearest grid point; a tie goes to the longer one)
//   frames = frame_grid * k + 1
// e.g. 4 s at 16 fps on a grid of 4: n = 64 -> 65 frames; 5 s -> 80 -> 81; 1 s -> 16 -> 17;
// 0.1 s -> 2 -> 1.
int64_t frames_for_seconds(double seconds, double fps, int64_t frame_grid);

// The `seconds` string of a Video object: the request's value when it gave one, else
// num_frames / fps; shortest decimal form ("4", "2.5", "5.0625").
std::string format_seconds(double seconds);

struct VideoRequest {
  GenerationParams params;  // height/width/num_frames unset when the request leaves them to the model
  std::optional<uint64_t> seed;
  std::optional<double> seconds;
  std::optional<double> fps;
  std::optional<std::string> model;
  AdapterRequest adapters;
  // Step caching: another backend than the server's, and / or its threshold.
  std::optional<std::string> cache_backend;
  std::optional<double> cache_threshold;
  std::optional<int> cache_interval;  // TaylorSeer's
  bool has_input_reference = false;
  // Image-to-video: the uploaded first frame (`input_reference`, as the OpenAI SDK sends it) and
  // last frame (`last_image`, vgen's), still encoded; plan_video decodes them for a model that
  // takes them.
  std::string input_reference, last_image;
};

// Fields of POST /v1/videos and /v1/videos/generations.
VideoRequest parse_video_request(const RequestFields& fields);

struct ImageRequest {
  GenerationParams params;
  std::optional<uint64_t> seed;
  int n = 1;
  std::optional<std::string> model;
  media::ImageFormat output_format = media::ImageFormat::PNG;
  int quality = 90;   // JPEG/WebP quality, from output_compression
  bool url = false;   // response_format "url": the images are saved in the media directory
  bool edit = false;  // /v1/images/edits
  std::string image;  // edits: the encoded input image (one file part 'image' or 'image[]')
  AdapterRequest adapters;
};

// Fields of POST /v1/images/generations (edit = false) and /v1/images/edits (edit = true).
ImageRequest parse_image_request(const RequestFields& fields, bool edit);

// A request made concrete for the model: resolved and validated once by the pipeline's
// resolve(); the worker runs `resolved` as is.
struct VideoPlan {
  ResolvedParams resolved;
  AdapterPlan adapters;
  double fps = 0.0;  // the request's, else the model's
  std::string seconds;  // for the Video object
  std::string size;     // "WxH"
  // What the Video object shows beyond OpenAI's fields (num_frames, fps, num_inference_steps,
  // guidance_scale, seed); the job store keeps it with the job.
  nlohmann::json extras() const;
};

VideoPlan plan_video(const VideoRequest& request, const ModelInfo& model, const DiffusionPipeline& pipeline);

struct ImagePlan {
  ResolvedParams resolved;  // one frame; the seed of image i is resolved.seed + i
  AdapterPlan adapters;
  int n = 1;
  media::ImageFormat output_format = media::ImageFormat::PNG;
  int quality = 90;
  bool url = false;
  std::string size;
};

ImagePlan plan_image(const ImageRequest& request, const ModelInfo& model, const DiffusionPipeline& pipeline);

// A random seed for requests that give none, in [0, 2^32) so that every JSON client reads it exactly.
uint64_t random_seed();

}  // namespace vgen::serving
