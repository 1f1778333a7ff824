#include "serving/requests.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <random>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "core/error.h"
#include "nn/lora.h"
#include "serving/api_error.h"

namespace vgen::serving {
namespace {

// Bounds that keep absurd requests from reaching the pipeline; the model's own limits
// (size multiple, frame grid, ...) come from its resolve().
constexpr int64_t kMaxSide = 8192;
constexpr int64_t kMaxFrames = 4097;
constexpr int64_t kMaxSteps = 1000;
constexpr double kMaxGuidance = 100.0;
constexpr double kMaxFps = 240.0;
constexpr double kMaxSeconds = 3600.0;
// Text fields are stored with each job and echoed in every Video object; Wan's text encoder
// reads at most 512 tokens, which English prose fills in about 2,500 characters.
constexpr size_t kMaxPromptChars = 4000;
// Deeper nesting is never a valid request; checked before parsing, which would allocate per level.
constexpr int kMaxJsonDepth = 32;

size_t utf8_chars(const std::string& s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::optional<std::string> bounded_text(const RequestFields& f, const std::string& name) {
  std::optional<std::string> text = f.string(name);
  if (text && utf8_chars(*text) > kMaxPromptChars)
    bad_field(name, fmt::format("'{}' is {} characters long; at most {} are accepted", name, utf8_chars(*text),
                                kMaxPromptChars));
  return text;
}

// The deepest nesting of arrays and objects in `body` (strings skipped), stopping at `limit` + 1.
int json_depth(const std::string& body, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

std::string describe_json_type(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return v.type_name();
}

// Whole-string decimal integer, as multipart fields carry them.
std::optional<long long> parse_integer_text(const std::string& s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (size_t j = i; j < s.size(); ++j)
    if (s[j] < '0' || s[j] > '9') return std::nullopt;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return v;
}

// Multipart text is raw bytes; JSON bodies are checked by the JSON parser.
bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::optional<double> parse_number_text(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

const std::vector<std::string> kVideoFields = {"prompt",          "model",          "seconds",        "size",
                                               "input_reference", "last_image",     "fps",            "num_frames",
                                               "negative_prompt", "num_inference_steps", "guidance_scale",
                                               "guidance_scale_2", "seed", "lora", "lora_2", "timesteps", "sigmas",
                                               "cache_backend", "cache_threshold", "cache_interval"};
const std::vector<std::string> kImageFields = {"prompt", "model", "n", "size", "response_format", "output_format",
                                               "output_compression", "quality", "user", "negative_prompt",
                                               "num_inference_steps", "guidance_scale", "seed", "lora", "lora_2"};

std::string required_prompt(const RequestFields& f) {
  std::optional<std::string> prompt = bounded_text(f, "prompt");
  if (!prompt) throw ApiError(400, "missing required parameter 'prompt'", "prompt", "missing_required_parameter");
  if (prompt->empty()) bad_field("prompt", "'prompt' must not be empty");
  return *prompt;
}

// The fields video and image requests share.
void parse_common(const RequestFields& f, GenerationParams& p, std::optional<uint64_t>& seed,
                  std::optional<std::string>& model) {
  p.prompt = required_prompt(f);
  model = f.string("model");
  p.negative_prompt = bounded_text(f, "negative_prompt");
  if (auto v = f.integer("num_inference_steps", 1, kMaxSteps)) p.num_inference_steps = static_cast<int>(*v);
  p.guidance_scale = f.number("guidance_scale", 0.0, kMaxGuidance);
  // -1, as the CLI's --seed -1, asks for a random seed like an absent one (returned in the response).
  seed = f.is_integer("seed", -1) ? std::nullopt : f.unsigned_integer("seed");
  if (auto size = f.string("size")) {
    if (auto wh = parse_size(*size, "size")) {
      p.width = wh->first;
      p.height = wh->second;
    }
  }
}

AdapterRequest parse_adapters(const RequestFields& f) {
  AdapterRequest a;
  a.lora = f.string("lora");
  a.lora_2 = f.string("lora_2");
  return a;
}

// "NAME[:SCALE],..." -> the adapters' files and scales; 400 naming `field` for an unknown name,
// a bad scale, or a model that takes no adapters.
std::vector<nn::LoraAdapterSpec> adapter_list(const std::optional<std::string>& text, const char* field,
                                               const ModelInfo& model, const PipelineCapabilities& caps) {
  std::vector<nn::LoraAdapterSpec> out;
  if (!text || text->empty()) return out;
  if (!caps.lora) bad_field(field, fmt::format("'{}': model '{}' takes no LoRA adapters", field, model.id));
  if (model.adapters.empty())
    bad_field(field, fmt::format("'{}': this server has no LoRA adapters (vgen serve --lora-dir)", field));
  if (text->size() > 4096) bad_field(field, fmt::format("'{}' is longer than 4096 characters", field));
  size_t start = 0;
  while (start <= text->size()) {
    const size_t comma = std::min(text->find(',', start), text->size());
    const std::string item = text->substr(start, comma - start);
    const size_t colon = item.rfind(':');
    const std::string name = item.substr(0, colon);
    double scale = 1.0;
    if (colon != std::string::npos) {
      const std::optional<double> v = parse_number_text(item.substr(colon + 1));
      if (!v || std::fabs(*v) > nn::kMaxLoraScale)
        bad_field(field, fmt::format("'{}': scale of '{}' must be a number in [-{}, {}]", field, name,
                                     nn::kMaxLoraScale, nn::kMaxLoraScale));
      scale = *v;
    }
    const auto it = model.adapters.find(name);
    if (it == model.adapters.end()) {
      std::string names;
      for (const auto& [n, path] : model.adapters) names += (names.empty() ? "" : ", ") + n;
      bad_field(field, fmt::format("'{}': no adapter '{}' (served: {}; GET /v1/models lists them)", field, name, names));
    }
    out.push_back({it->second, scale});
    if (out.size() > 8) bad_field(field, fmt::format("'{}': at most 8 adapters", field));
    start = comma + 1;
  }
  return out;
}

AdapterPlan plan_adapters(const AdapterRequest& request, const ModelInfo& model, const DiffusionPipeline& pipeline) {
  const PipelineCapabilities& caps = pipeline.capabilities();
  AdapterPlan plan;
  plan.lora = adapter_list(request.lora, "lora", model, caps);
  plan.lora_2 = adapter_list(request.lora_2, "lora_2", model, caps);
  if (!plan.lora_2.empty() && !caps.two_experts)
    bad_field("lora_2", fmt::format("'lora_2': model '{}' has one transformer (lora_2 is for the second expert)", model.id));
  return plan;
}

void check_model(const std::optional<std::string>& requested, const ModelInfo& model) {
  if (requested && *requested != model.id)
    throw ApiError(400, fmt::format("model '{}' is not served here; this server serves '{}' (see GET /v1/models)",
                                    *requested, model.id),
                   "model", "model_not_found");
}

// A prompt longer than the text encoder reads would be cut silently (as diffusers does): 400.
void check_prompt_tokens(const DiffusionPipeline& pipeline, const ResolvedParams& r) {
  const auto check = [&](const std::string& text, const char* field) {
    const std::optional<int64_t> tokens = pipeline.prompt_token_count(text);
    if (tokens && *tokens > r.max_sequence_length)
      throw ApiError(400,
                     fmt::format("'{}' is {} tokens long; the model reads at most {} (max_sequence_length): shorten it",
                                 field, *tokens, r.max_sequence_length),
                     std::string(field), "invalid_value");
  };
  check(r.prompt, "prompt");
  if (r.guidance_scale > 1.0) check(r.negative_prompt, "negative_prompt");
}

// `image_field`: the request's field of the pipeline's `image` (input_reference for videos,
// image for edits).
ResolvedParams resolve_or_400(const DiffusionPipeline& pipeline, const GenerationParams& p,
                              const char* image_field = "input_reference") {
  try {
    ResolvedParams r = pipeline.resolve(p);
    check_prompt_tokens(pipeline, r);
    return r;
  } catch (const Error& e) {
    // The pipeline's message names its own parameter; the client's field for it is:
    const std::string message = e.what();
    std::optional<std::string> param;
    if (message.starts_with("image")) param = image_field;
    if (message.starts_with("last_image")) param = "last_image";
    if (message.starts_with("cache_config.")) {
      param = message.starts_with("cache_config.teacache_thresh") || message.starts_with("cache_config.threshold")
                  ? "cache_threshold"
              : message.starts_with("cache_config.cache_interval") ? "cache_interval"
                                                                    : "cache_backend";
    }
    for (const auto& [word, field] : {std::pair{"timesteps", "timesteps"}, std::pair{"sigmas", "sigmas"},
                                      std::pair{"width", "size"}, std::pair{"height", "size"},
                                      std::pair{"num_frames", "num_frames"}, std::pair{"frames", "num_frames"},
                                      std::pair{"steps", "num_inference_steps"},
                                      std::pair{"guidance_scale_2", "guidance_scale_2"}, std::pair{"guidance", "guidance_scale"},
                                      std::pair{"negative_prompt", "negative_prompt"}, std::pair{"prompt", "prompt"}})
      if (!param && message.find(word) != std::string::npos) {
        param = field;
        break;
      }
    throw ApiError(400, message, param, "invalid_value");
  }
}

}  // namespace

RequestFields RequestFields::from_json(const std::string& body) {
  RequestFields f;
  if (body.empty()) throw ApiError(400, "the request body is empty; send a JSON object", std::nullopt, "invalid_json");
  if (body.size() > kMaxJsonBytes)
    throw ApiError(413, fmt::format("the JSON body is {} bytes; at most {} are accepted", body.size(), kMaxJsonBytes),
                   std::nullopt, "request_too_large");
  if (json_depth(body, kMaxJsonDepth) > kMaxJsonDepth)
    throw ApiError(400, fmt::format("the JSON body nests arrays or objects deeper than {} levels", kMaxJsonDepth),
                   std::nullopt, "invalid_json");
  try {
    f.json_ = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers out of range (1e400)
    throw ApiError(400, fmt::format("the request body is not valid JSON ({})", e.what()), std::nullopt,
                   "invalid_json");
  }
  if (!f.json_.is_object())
    throw ApiError(400, "the request body must be a JSON object (or multipart/form-data)", std::nullopt,
                   "invalid_json");
  return f;
}

RequestFields RequestFields::from_form(std::vector<FormPart> parts) {
  RequestFields f;
  f.form_ = true;
  f.parts_ = std::move(parts);
  return f;
}

void RequestFields::reject_unknown(const std::vector<std::string>& accepted) const {
  const auto check = [&](const std::string& name) {
    for (const std::string& a : accepted)
      if (a == name) return;
    std::string list;
    for (const std::string& a : accepted) list += (list.empty() ? "" : ", ") + a;
    throw ApiError(422, fmt::format("unknown parameter '{}' (accepted: {})", name, list), name, "unknown_parameter");
  };
  if (form_) {
    for (const FormPart& part : parts_) check(part.name);
  } else {
    for (auto it = json_.begin(); it != json_.end(); ++it) check(it.key());
  }
}

bool RequestFields::has(const std::string& name) const {
  if (form_) {
    for (const FormPart& part : parts_)
      if (part.name == name) return true;
    return false;
  }
  auto it = json_.find(name);
  return it != json_.end() && !it->is_null();
}

std::optional<std::string> RequestFields::form_text(const std::string& name) const {
  const FormPart* found = nullptr;
  for (const FormPart& part : parts_) {
    if (part.name != name) continue;
    if (found) bad_field(name, fmt::format("'{}' is given more than once", name));
    found = &part;
  }
  if (!found) return std::nullopt;
  if (!is_valid_utf8(found->content)) bad_field(name, fmt::format("'{}' is not valid UTF-8 text", name));
  return found->content;
}

std::optional<std::string> RequestFields::string(const std::string& name) const {
  if (form_) return form_text(name);
  auto it = json_.find(name);
  if (it == json_.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) bad_field(name, fmt::format("'{}' must be a string, got {}", name, describe_json_type(*it)));
  return it->get<std::string>();
}

std::optional<int64_t> RequestFields::integer(const std::string& name, int64_t min, int64_t max) const {
  std::optional<long long> v;
  if (form_) {
    const std::optional<std::string> text = form_text(name);
    if (!text) return std::nullopt;
    v = parse_integer_text(*text);
    if (!v) bad_field(name, fmt::format("'{}' must be an integer, got '{}'", name, *text));
  } else {
    auto it = json_.find(name);
    if (it == json_.end() || it->is_null()) return std::nullopt;
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(max))
      bad_field(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, it->dump()));
    if (!it->is_number_integer())
      bad_field(name, fmt::format("'{}' must be an integer, got {}", name,
                                  it->is_number() ? it->dump() : describe_json_type(*it)));
    v = it->get<long long>();
  }
  if (*v < min || *v > max) bad_field(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, *v));
  return *v;
}

bool RequestFields::is_integer(const std::string& name, int64_t value) const {
  if (form_) {
    const std::optional<std::string> text = form_text(name);
    return text && *text == std::to_string(value);
  }
  auto it = json_.find(name);
  return it != json_.end() && it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() == value;
}

std::optional<uint64_t> RequestFields::unsigned_integer(const std::string& name) const {
  const std::string message = fmt::format("'{}' must be an integer in [0, 18446744073709551615]", name);
  if (form_) {
    const std::optional<std::string> text = form_text(name);
    if (!text) return std::nullopt;
    if (text->empty() || text->size() > 20 || text->find_first_not_of("0123456789") != std::string::npos)
      bad_field(name, fmt::format("{}, got '{}'", message, *text));
    errno = 0;
    const unsigned long long v = std::strtoull(text->c_str(), nullptr, 10);
    if (errno == ERANGE) bad_field(name, fmt::format("{}, got '{}'", message, *text));
    return v;
  }
  auto it = json_.find(name);
  if (it == json_.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  bad_field(name, fmt::format("{}, got {}", message, it->is_number() ? it->dump() : describe_json_type(*it)));
}

std::optional<double> RequestFields::number(const std::string& name, double min, double max, bool accept_text) const {
  std::optional<double> v;
  if (form_) {
    const std::optional<std::string> text = form_text(name);
    if (!text) return std::nullopt;
    v = parse_number_text(*text);
    if (!v) bad_field(name, fmt::format("'{}' must be a number, got '{}'", name, *text));
  } else {
    auto it = json_.find(name);
    if (it == json_.end() || it->is_null()) return std::nullopt;
    if (it->is_number()) {
      v = it->get<double>();
    } else if (accept_text && it->is_string()) {
      v = parse_number_text(it->get<std::string>());
      if (!v) bad_field(name, fmt::format("'{}' must be a number, got '{}'", name, it->get<std::string>()));
    } else {
      bad_field(name, fmt::format("'{}' must be a number, got {}", name, describe_json_type(*it)));
    }
  }
  if (!(*v >= min && *v <= max)) bad_field(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, *v));
  return v;
}

std::optional<std::vector<double>> RequestFields::number_list(const std::string& name, size_t max_count) const {
  std::vector<double> out;
  const std::string message = fmt::format("'{}' must be a list of 1 to {} numbers", name, max_count);
  if (form_) {
    const std::optional<std::string> text = form_text(name);
    if (!text) return std::nullopt;
    size_t start = 0;
    while (true) {
      const size_t comma = text->find(',', start);
      const std::string item = text->substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      const std::optional<double> v = parse_number_text(item);
      if (!v) bad_field(name, fmt::format("{} (comma-separated in a form), got '{}'", message, *text));
      out.push_back(*v);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    auto it = json_.find(name);
    if (it == json_.end() || it->is_null()) return std::nullopt;
    if (!it->is_array()) bad_field(name, fmt::format("{}, got {}", message, describe_json_type(*it)));
    for (const nlohmann::json& v : *it) {
      if (!v.is_number()) bad_field(name, fmt::format("{}, got an item that is {}", message, describe_json_type(v)));
      out.push_back(v.get<double>());
    }
  }
  if (out.empty() || out.size() > max_count) bad_field(name, fmt::format("{}, got {}", message, out.size()));
  return out;
}

std::vector<const FormPart*> RequestFields::files(const std::string& name) const {
  std::vector<const FormPart*> out;
  for (const FormPart& part : parts_)
    if (part.name == name) out.push_back(&part);
  return out;
}

std::optional<std::pair<int64_t, int64_t>> parse_size(const std::string& text, const std::string& field) {
  if (text == "auto") return std::nullopt;
  const size_t x = text.find('x');
  const auto dimension = [&](const std::string& s) -> std::optional<int64_t> {
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::stoll(s);
  };
  const std::optional<int64_t> w = x == std::string::npos ? std::nullopt : dimension(text.substr(0, x));
  const std::optional<int64_t> h = x == std::string::npos ? std::nullopt : dimension(text.substr(x + 1));
  if (!w || !h)
    bad_field(field, fmt::format("'{}' must be \"WIDTHxHEIGHT\" in pixels (width first) or \"auto\", got '{}'",
                                 field, text));
  if (*w < 1 || *h < 1 || *w > kMaxSide || *h > kMaxSide)
    bad_field(field, fmt::format("'{}': width and height must be in [1, {}], got '{}'", field, kMaxSide, text));
  return std::make_pair(*w, *h);
}

int64_t frames_for_seconds(double seconds, double fps, int64_t frame_grid) {
  const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(std::floor(seconds * fps + 0.5)));
  const int64_t k = (2 * (n - 1) + frame_grid) / (2 * frame_grid);
  return frame_grid * k + 1;
}

std::string format_seconds(double seconds) { return fmt::format("{}", seconds); }

VideoRequest parse_video_request(const RequestFields& f) {
  f.reject_unknown(kVideoFields);
  VideoRequest r;
  parse_common(f, r.params, r.seed, r.model);
  r.seconds = f.number("seconds", 0.0, kMaxSeconds, /*accept_text=*/true);
  if (r.seconds && *r.seconds <= 0) bad_field("seconds", fmt::format("'seconds' must be > 0, got {}", *r.seconds));
  r.fps = f.number("fps", 0.0, kMaxFps);
  if (r.fps && *r.fps <= 0) bad_field("fps", fmt::format("'fps' must be > 0, got {}", *r.fps));
  r.params.num_frames = f.integer("num_frames", 1, kMaxFrames);
  if (r.seconds && r.params.num_frames)
    bad_field("num_frames", "give either 'seconds' or 'num_frames', not both");
  r.params.guidance_scale_2 = f.number("guidance_scale_2", 0.0, kMaxGuidance);
  // An explicit schedule (step-distilled models): the steps follow its length.
  r.params.timesteps = f.number_list("timesteps", kMaxSteps);
  r.params.sigmas = f.number_list("sigmas", kMaxSteps);
  // Step caching: the server's cache_config (vgen serve --config) unless these are given.
  r.cache_backend = f.string("cache_backend");
  if (r.cache_backend && !parse_cache_backend(*r.cache_backend))
    bad_field("cache_backend", fmt::format("'cache_backend' must be one of {}, got '{}'", cache_backend_choices(), *r.cache_backend));
  r.cache_threshold = f.number("cache_threshold", 0.0, 1.0);
  if (r.cache_threshold && *r.cache_threshold <= 0.0) bad_field("cache_threshold", "'cache_threshold' must be in (0, 1]");
  if (const auto interval = f.integer("cache_interval", 1, 1000)) r.cache_interval = static_cast<int>(*interval);
  // The images are file parts of a multipart body (a JSON body cannot carry one within its limit).
  for (auto [name, bytes] : {std::pair{"input_reference", &r.input_reference}, std::pair{"last_image", &r.last_image}}) {
    if (!f.has(name)) continue;
    const std::vector<const FormPart*> files = f.files(name);
    if (files.size() != 1)
      bad_field(name, fmt::format("'{}' must be one image file part of a multipart/form-data body (PNG, JPEG or WebP)",
                                  name));
    if (files[0]->content.empty()) bad_field(name, fmt::format("'{}' is an empty file", name));
    *bytes = files[0]->content;
  }
  r.adapters = parse_adapters(f);
  r.has_input_reference = f.has("input_reference");
  if (f.has("last_image") && !r.has_input_reference)
    bad_field("last_image", "'last_image' needs 'input_reference' (the first frame) too");
  return r;
}

ImageRequest parse_image_request(const RequestFields& f, bool edit) {
  std::vector<std::string> accepted = kImageFields;
  if (edit) accepted.insert(accepted.end(), {"image", "image[]", "mask"});
  f.reject_unknown(accepted);
  ImageRequest r;
  r.edit = edit;
  parse_common(f, r.params, r.seed, r.model);
  r.adapters = parse_adapters(f);
  r.n = static_cast<int>(f.integer("n", 1, 10).value_or(1));
  if (auto format = f.string("response_format")) {
    if (*format != "b64_json" && *format != "url")
      bad_field("response_format", fmt::format("'response_format' must be 'b64_json' or 'url', got '{}'", *format));
    r.url = *format == "url";
  }
  if (auto format = f.string("output_format")) {
    if (*format != "png" && *format != "jpeg" && *format != "webp")
      bad_field("output_format", fmt::format("'output_format' must be one of png, jpeg, webp; got '{}'", *format));
    r.output_format = media::parse_image_format(*format);
  }
  // OpenAI's output_compression (0-100, for jpeg and webp) is the encoder's quality here.
  if (auto c = f.integer("output_compression", 0, 100)) r.quality = std::max<int>(1, static_cast<int>(*c));
  if (auto quality = f.string("quality")) {
    // One quality level: OpenAI's values are accepted and do not change the output.
    if (*quality != "auto" && *quality != "low" && *quality != "medium" && *quality != "high" &&
        *quality != "standard" && *quality != "hd")
      bad_field("quality", fmt::format("'quality' must be one of auto, low, medium, high, standard, hd; got '{}'",
                                       *quality));
  }
  f.string("user");
  if (edit && f.files("image").empty() && f.files("image[]").empty() && !f.has("image"))
    throw ApiError(400, "missing required parameter 'image' (a file part)", "image", "missing_required_parameter");
  if (edit) {
    if (f.has("mask")) bad_field("mask", "'mask' is not supported: the edit follows the prompt over the whole image");
    std::vector<const FormPart*> files = f.files("image");
    for (const FormPart* part : f.files("image[]")) files.push_back(part);
    if (files.size() != 1)
      bad_field("image", "'image' must be one image file part of a multipart/form-data body (PNG, JPEG or WebP)");
    if (files[0]->content.empty()) bad_field("image", "'image' is an empty file");
    r.image = files[0]->content;
  }
  return r;
}

nlohmann::json VideoPlan::extras() const {
  nlohmann::json j = {{"num_frames", resolved.num_frames},
                      {"fps", fps},
                      {"num_inference_steps", resolved.num_inference_steps},
                      {"guidance_scale", resolved.guidance_scale},
                      {"seed", resolved.seed}};
  // An explicit schedule is part of what ran: shown as given.
  if (resolved.timesteps) j["timesteps"] = *resolved.timesteps;
  if (resolved.sigmas) j["sigmas"] = *resolved.sigmas;
  if (resolved.cache.enabled()) {
    j["cache_backend"] = cache_backend_name(resolved.cache.cache_backend);
    if (resolved.cache.cache_backend == CacheBackend::TaylorSeer)
      j["cache_interval"] = resolved.cache.cache_interval;  // TaylorSeer has no threshold: a fixed schedule
    else
      j["cache_threshold"] = resolved.cache.effective_threshold();
  }
  return j;
}

VideoPlan plan_video(const VideoRequest& request, const ModelInfo& model, const DiffusionPipeline& pipeline) {
  check_model(request.model, model);
  const PipelineCapabilities& caps = pipeline.capabilities();
  if (request.has_input_reference && !caps.image_input)
    throw ApiError(400, fmt::format("image-to-video not supported by this model ('{}' is {})", model.id,
                                    caps.task_list()),
                   "input_reference", "unsupported_value");
  if (!request.last_image.empty() && !caps.last_image_input)
    throw ApiError(400, fmt::format("model '{}' ({}) takes no last frame", model.id, caps.task_list()), "last_image",
                   "unsupported_value");
  if (!request.has_input_reference && caps.image_required)
    throw ApiError(400, fmt::format("model '{}' generates video from an image: send the first frame as the "
                                    "'input_reference' file",
                                    model.id),
                   "input_reference", "missing_required_parameter");
  VideoPlan plan;
  plan.fps = request.fps.value_or(caps.default_fps);
  GenerationParams p = request.params;
  for (auto [name, bytes, image] : {std::tuple{"input_reference", &request.input_reference, &p.image},
                                    std::tuple{"last_image", &request.last_image, &p.last_image}}) {
    if (bytes->empty()) continue;
    try {
      *image = media::decode_image(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), name);
    } catch (const Error& e) {
      bad_field(name, fmt::format("'{}' is not a readable image: {}", name, e.what()));
    }
  }
  p.seed = request.seed ? *request.seed : random_seed();
  if (request.seconds) {
    p.num_frames = frames_for_seconds(*request.seconds, plan.fps, caps.temporal_multiple);
    if (*p.num_frames > kMaxFrames)
      bad_field("seconds", fmt::format("{} s at {} fps is {} frames, more than the {} allowed", *request.seconds,
                                       plan.fps, *p.num_frames, kMaxFrames));
  }
  if (request.cache_backend || request.cache_threshold || request.cache_interval) {
    // From the server's cache_config; another backend starts from that backend's defaults.
    CacheConfig c = model.cache;
    if (request.cache_backend) {
      const CacheBackend b = *parse_cache_backend(*request.cache_backend);
      if (b != c.cache_backend) {
        c = CacheConfig{};
        c.cache_backend = b;
      }
    }
    if (request.cache_threshold) {
      if (!c.enabled()) bad_field("cache_threshold", "'cache_threshold' needs a 'cache_backend' (this server runs none)");
      if (c.cache_backend == CacheBackend::TeaCache) c.teacache_thresh = *request.cache_threshold;
      else c.threshold = *request.cache_threshold;
    }
    if (request.cache_interval) {
      if (c.cache_backend != CacheBackend::TaylorSeer)
        bad_field("cache_interval", "'cache_interval' applies to cache_backend 'taylorseer' only");
      c.cache_interval = *request.cache_interval;
    }
    p.cache = c;
  }
  plan.resolved = resolve_or_400(pipeline, p);
  plan.adapters = plan_adapters(request.adapters, model, pipeline);
  plan.seconds = format_seconds(request.seconds ? *request.seconds
                                                : static_cast<double>(plan.resolved.num_frames) / plan.fps);
  plan.size = fmt::format("{}x{}", plan.resolved.width, plan.resolved.height);
  return plan;
}

ImagePlan plan_image(const ImageRequest& request, const ModelInfo& model, const DiffusionPipeline& pipeline) {
  check_model(request.model, model);
  if (request.edit && !pipeline.capabilities().supports("image-to-image"))
    throw ApiError(400, fmt::format("model '{}' ({}) cannot edit images; use /v1/images/generations", model.id,
                                    pipeline.capabilities().task_list()),
                   "image", "unsupported_value");
  ImagePlan plan;
  GenerationParams p = request.params;
  // An edit (FLUX.1 Kontext): the input image is the pipeline's image input.
  if (request.edit) {
    try {
      p.image = media::decode_image(reinterpret_cast<const uint8_t*>(request.image.data()), request.image.size(), "image");
    } catch (const Error& e) {
      bad_field("image", fmt::format("'image' is not a readable image: {}", e.what()));
    }
    // The pipeline crops each side down to its multiple (diffusers' get_default_height_width):
    // a smaller image would leave nothing to edit. Refused here rather than failing the job.
    const int64_t m = pipeline.capabilities().spatial_multiple;
    if (p.image.size(0) < m || p.image.size(1) < m)
      bad_field("image", fmt::format("'image' is {}x{}; an image to edit needs at least {} pixels on each side",
                                     p.image.size(1), p.image.size(0), m));
  }
  p.num_frames = 1;
  p.seed = request.seed ? *request.seed : random_seed();
  plan.resolved = resolve_or_400(pipeline, p, request.edit ? "image" : "input_reference");
  plan.adapters = plan_adapters(request.adapters, model, pipeline);
  plan.n = request.n;
  plan.output_format = request.output_format;
  plan.quality = request.quality;
  plan.url = request.url;
  plan.size = fmt::format("{}x{}", plan.resolved.width, plan.resolved.height);
  return plan;
}

uint64_t random_seed() {
  thread_local std::random_device device;
  return device();
}

}  // namespace vgen::serving
