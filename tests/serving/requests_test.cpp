// Request parsing and validation of the HTTP server: JSON and multipart bodies, the
// size/seconds -> frames mapping, and the plan that the pipeline's resolve() validates.
#include <gtest/gtest.h>

#include <functional>

#include "media/image.h"
#include "serving/api_error.h"
#include "serving/requests.h"
#include "serving/video_id.h"
#include "serving/fake_pipeline.h"

using namespace vgen::serving;
using vgen::testing::FakePipeline;

namespace {

// Runs `f`, expects an ApiError with this status (and param when given); returns its message.
std::string expect_api_error(const std::function<void()>& f, int status, const char* param = nullptr) {
  try {
    f();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, status) << e.what();
    if (param) {
      EXPECT_TRUE(e.param.has_value()) << e.what();
      if (e.param) EXPECT_EQ(*e.param, param) << e.what();
    }
    return e.what();
  }
  ADD_FAILURE() << "no ApiError thrown";
  return "";
}

ModelInfo tiny_model() {
  ModelInfo m;
  m.id = "wan21_t2v_tiny";
  return m;
}

VideoPlan plan_json(const std::string& body) {
  FakePipeline pipeline;
  return plan_video(parse_video_request(RequestFields::from_json(body)), tiny_model(), pipeline);
}

ImagePlan plan_image_json(const std::string& body) {
  FakePipeline pipeline;
  return plan_image(parse_image_request(RequestFields::from_json(body), false), tiny_model(), pipeline);
}

FormPart field(const std::string& name, const std::string& value) { return {name, "", "", value}; }

}  // namespace

TEST(ServingRequests, SizeIsWidthByHeight) {
  EXPECT_EQ(parse_size("832x480", "size"), std::make_pair(int64_t{832}, int64_t{480}));
  EXPECT_EQ(parse_size("48x32", "size"), std::make_pair(int64_t{48}, int64_t{32}));
  EXPECT_FALSE(parse_size("auto", "size").has_value());
  for (const char* bad : {"832", "x480", "832x", "0x480", "-1x2", "832X480", "832x480 ", " 832x480", "99999x1",
                          "1e3x2", "832x480x3", "", "8193x16"}) {
    const std::string message = expect_api_error([&] { parse_size(bad, "size"); }, 400, "size");
    EXPECT_NE(message.find("size"), std::string::npos) << message;
  }
}

TEST(ServingRequests, SecondsSnapToTheFourKPlusOneGrid) {
  EXPECT_EQ(frames_for_seconds(4, 16, 4), 65);  // 64 -> nearest 4k+1 is 65
  EXPECT_EQ(frames_for_seconds(5, 16, 4), 81);  // 80 -> 81 (Wan's default length)
  EXPECT_EQ(frames_for_seconds(1, 16, 4), 17);
  EXPECT_EQ(frames_for_seconds(2, 16, 4), 33);
  EXPECT_EQ(frames_for_seconds(4, 24, 4), 97);
  EXPECT_EQ(frames_for_seconds(63.0 / 16, 16, 4), 65);  // 63 is halfway between 61 and 65: the longer
  EXPECT_EQ(frames_for_seconds(62.0 / 16, 16, 4), 61);
  EXPECT_EQ(frames_for_seconds(0.1, 16, 4), 1);   // 2 frames -> 1
  EXPECT_EQ(frames_for_seconds(0.01, 16, 4), 1);  // never 0
  EXPECT_EQ(frames_for_seconds(3.0 / 16, 16, 4), 5);  // 3 is halfway between 1 and 5
  for (double s = 0.05; s < 20; s += 0.37) EXPECT_EQ(frames_for_seconds(s, 16, 4) % 4, 1) << s;
}

TEST(ServingRequests, SecondsFormatting) {
  EXPECT_EQ(format_seconds(4), "4");
  EXPECT_EQ(format_seconds(2.5), "2.5");
  EXPECT_EQ(format_seconds(81.0 / 16), "5.0625");
}

TEST(ServingRequests, VideoPlanFromJson) {
  const VideoPlan p = plan_json(R"({"prompt": "a cat", "seconds": "4", "size": "48x32", "num_inference_steps": 2,
                                    "seed": 7, "guidance_scale": 1.0, "negative_prompt": "blur"})");
  EXPECT_EQ(p.resolved.width, 48);
  EXPECT_EQ(p.resolved.height, 32);
  EXPECT_EQ(p.resolved.num_frames, 65);
  EXPECT_EQ(p.resolved.num_inference_steps, 2);
  EXPECT_EQ(p.resolved.seed, 7u);
  EXPECT_EQ(p.resolved.negative_prompt, "blur");
  EXPECT_DOUBLE_EQ(p.resolved.guidance_scale, 1.0);
  EXPECT_EQ(p.seconds, "4");
  EXPECT_EQ(p.size, "48x32");
  EXPECT_DOUBLE_EQ(p.fps, 16.0);
  // The worker runs `resolved` itself, so what runs is exactly what the Video object reports.
  EXPECT_EQ(p.extras()["num_frames"], 65);
  EXPECT_EQ(p.extras()["seed"], 7);
}

TEST(ServingRequests, SecondsAsNumberFpsAndNumFrames) {
  EXPECT_EQ(plan_json(R"({"prompt": "x", "seconds": 2})").resolved.num_frames, 33);
  EXPECT_EQ(plan_json(R"({"prompt": "x", "seconds": 2.5})").seconds, "2.5");
  const VideoPlan at24 = plan_json(R"({"prompt": "x", "seconds": 1, "fps": 24})");
  EXPECT_EQ(at24.resolved.num_frames, 25);
  EXPECT_DOUBLE_EQ(at24.fps, 24.0);
  const VideoPlan frames = plan_json(R"({"prompt": "x", "num_frames": 9})");
  EXPECT_EQ(frames.resolved.num_frames, 9);
  EXPECT_EQ(frames.seconds, "0.5625");  // 9 / 16
  // Neither: the model's default length (the fake's 5 frames).
  EXPECT_EQ(plan_json(R"({"prompt": "x", "size": "auto"})").resolved.num_frames, 5);
}

// The frame rate and the frame grid come from the pipeline's capabilities, not from Wan's
// numbers: a model at 24 fps on a grid of 8k+1 frames plans other lengths for the same request.
TEST(ServingRequests, FramePlanningFollowsCapabilities) {
  vgen::PipelineCapabilities c = vgen::testing::fake_capabilities();
  c.default_fps = 24.0;
  c.temporal_multiple = 8;
  c.default_num_frames = 9;
  FakePipeline other(std::chrono::milliseconds(1), c);
  const auto plan = [&](const std::string& body) {
    return plan_video(parse_video_request(RequestFields::from_json(body)), tiny_model(), other);
  };
  // 4 s at 24 fps: 96 frames -> nearest 8k+1 is 97 (16 fps on a grid of 4 gives 65).
  const VideoPlan four = plan(R"({"prompt": "x", "seconds": 4})");
  EXPECT_EQ(four.resolved.num_frames, 97);
  EXPECT_DOUBLE_EQ(four.fps, 24.0);
  EXPECT_EQ(four.extras()["fps"], 24.0);
  // 1 s: 24 -> 25 on a grid of 8 (17 on Wan's); a tie (n = 5, halfway between 1 and 9) goes up.
  EXPECT_EQ(plan(R"({"prompt": "x", "seconds": 1})").resolved.num_frames, 25);
  EXPECT_EQ(plan(R"({"prompt": "x", "seconds": 0.1875})").resolved.num_frames, 9);
  // No length: the model's default; its seconds at the model's fps.
  const VideoPlan none = plan(R"({"prompt": "x"})");
  EXPECT_EQ(none.resolved.num_frames, 9);
  EXPECT_EQ(none.seconds, "0.375");  // 9 / 24
  // A length off the grid is refused by the pipeline's resolve (400).
  expect_api_error([&] { plan(R"({"prompt": "x", "num_frames": 5})"); }, 400);
}

TEST(ServingRequests, RandomSeedWhenNoneIsGiven) {
  const VideoPlan a = plan_json(R"({"prompt": "x"})");
  const VideoPlan b = plan_json(R"({"prompt": "x"})");
  EXPECT_LT(a.resolved.seed, uint64_t{1} << 32);
  EXPECT_NE(a.resolved.seed, b.resolved.seed);  // 1 in 2^32 to fail
  EXPECT_EQ(plan_json(R"({"prompt": "x", "seed": 18446744073709551615})").resolved.seed, 18446744073709551615ull);
  // -1 draws a seed, as the CLI's --seed -1 does (JSON and form bodies alike).
  const VideoPlan minus_one = plan_json(R"({"prompt": "x", "seed": -1})");
  const VideoPlan minus_one_again = plan_json(R"({"prompt": "x", "seed": -1})");
  EXPECT_LT(minus_one.resolved.seed, uint64_t{1} << 32);
  EXPECT_NE(minus_one.resolved.seed, minus_one_again.resolved.seed);  // 1 in 2^32 to fail
}

TEST(ServingRequests, VideoValidationErrorsNameTheField) {
  struct Case {
    const char* body;
    int status;
    const char* param;
  };
  const Case cases[] = {
      {R"({"seconds": "4"})", 400, "prompt"},
      {R"({"prompt": ""})", 400, "prompt"},
      {R"({"prompt": 5})", 400, "prompt"},
      {R"({"prompt": "x", "bogus": 1})", 422, "bogus"},
      {R"({"prompt": "x", "seconds": "four"})", 400, "seconds"},
      {R"({"prompt": "x", "seconds": 0})", 400, "seconds"},
      {R"({"prompt": "x", "seconds": -1})", 400, "seconds"},
      {R"({"prompt": "x", "seconds": true})", 400, "seconds"},
      {R"({"prompt": "x", "seconds": 100000})", 400, "seconds"},
      {R"({"prompt": "x", "seconds": 1000})", 400, "seconds"},  // 16000 frames
      {R"({"prompt": "x", "size": 832})", 400, "size"},
      {R"({"prompt": "x", "size": "832*480"})", 400, "size"},
      {R"({"prompt": "x", "num_inference_steps": 2.5})", 400, "num_inference_steps"},
      {R"({"prompt": "x", "num_inference_steps": 0})", 400, "num_inference_steps"},
      {R"({"prompt": "x", "num_inference_steps": "2"})", 400, "num_inference_steps"},
      {R"({"prompt": "x", "num_inference_steps": 99999999999999999999})", 400, "num_inference_steps"},
      {R"({"prompt": "x", "guidance_scale": "high"})", 400, "guidance_scale"},
      {R"({"prompt": "x", "guidance_scale": -1})", 400, "guidance_scale"},
      {R"({"prompt": "x", "seed": -2})", 400, "seed"},
      {R"({"prompt": "x", "seed": 1.5})", 400, "seed"},
      {R"({"prompt": "x", "fps": 0})", 400, "fps"},
      {R"({"prompt": "x", "num_frames": 0})", 400, "num_frames"},
      {R"({"prompt": "x", "num_frames": 9, "seconds": 1})", 400, "num_frames"},
      {R"({"prompt": "x", "negative_prompt": ["a"]})", 400, "negative_prompt"},
      {R"({"prompt": "x", "model": "sora-2"})", 400, "model"},
      {R"({"prompt": "x", "input_reference": {"image_url": "http://x/y.png"}})", 400, "input_reference"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    expect_api_error([&] { plan_json(c.body); }, c.status, c.param);
  }
}

TEST(ServingRequests, PipelineValidationIsA400WithItsMessage) {
  // The pipeline's errors name the client's field too (param was null).
  std::string m = expect_api_error([] { plan_json(R"({"prompt": "x", "size": "50x32"})"); }, 400, "size");
  EXPECT_NE(m.find("multiples of 16"), std::string::npos) << m;
  m = expect_api_error([] { plan_json(R"({"prompt": "x", "num_frames": 8})"); }, 400, "num_frames");
  EXPECT_NE(m.find("4k+1"), std::string::npos) << m;
}

TEST(ServingRequests, InputReferenceOnATextToVideoModel) {
  FakePipeline pipeline;
  std::vector<FormPart> parts = {field("prompt", "x"), {"input_reference", "ref.png", "image/png", "\x89PNG"}};
  const std::string m = expect_api_error(
      [&] { plan_video(parse_video_request(RequestFields::from_form(parts)), tiny_model(), pipeline); }, 400,
      "input_reference");
  EXPECT_NE(m.find("image-to-video not supported by this model"), std::string::npos) << m;
}

TEST(ServingRequests, MalformedBodies) {
  expect_api_error([] { RequestFields::from_json(""); }, 400);
  expect_api_error([] { RequestFields::from_json("{"); }, 400);
  expect_api_error([] { RequestFields::from_json("[1, 2]"); }, 400);
  expect_api_error([] { RequestFields::from_json("\"prompt\""); }, 400);
  // null is "not given".
  EXPECT_EQ(plan_json(R"({"prompt": "x", "seed": null, "size": null, "seconds": 1})").resolved.num_frames, 17);
}

// A prompt longer than the model reads (max_sequence_length tokens) is a 400 naming the field,
// not a silent cut; the negative prompt counts only where guidance uses it.
TEST(ServingRequests, PromptsLongerThanTheModelReadsAre400) {
  vgen::PipelineCapabilities caps = vgen::testing::fake_capabilities();
  caps.default_max_sequence_length = 4;
  FakePipeline pipeline(std::chrono::milliseconds(1), caps);
  pipeline.count_tokens = true;
  const auto plan = [&](const std::string& body) {
    return plan_video(parse_video_request(RequestFields::from_json(body)), tiny_model(), pipeline);
  };
  EXPECT_EQ(plan(R"({"prompt": "a b c"})").resolved.prompt, "a b c");  // 3 words + </s>
  try {
    plan(R"({"prompt": "a b c d"})");
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, std::optional<std::string>("prompt"));
    EXPECT_NE(std::string(e.what()).find("5 tokens long"), std::string::npos) << e.what();
  }
  try {
    plan(R"({"prompt": "a", "negative_prompt": "x y z w", "guidance_scale": 5.0})");
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, std::optional<std::string>("negative_prompt"));
  }
  // Without guidance the negative prompt is not encoded: no limit applies to it.
  EXPECT_NO_THROW(plan(R"({"prompt": "a", "negative_prompt": "x y z w", "guidance_scale": 1.0})"));
}

TEST(ServingRequests, MultipartFieldsAreText) {
  FakePipeline pipeline;
  const std::vector<FormPart> parts = {field("prompt", "a cat"),  field("seconds", "2"),  field("size", "48x32"),
                                       field("num_inference_steps", "3"), field("guidance_scale", "1.5"),
                                       field("seed", "42"),         field("fps", "8")};
  const VideoPlan p = plan_video(parse_video_request(RequestFields::from_form(parts)), tiny_model(), pipeline);
  EXPECT_EQ(p.resolved.num_frames, 17);  // 2 s at 8 fps
  EXPECT_EQ(p.resolved.num_inference_steps, 3);
  EXPECT_DOUBLE_EQ(p.resolved.guidance_scale, 1.5);
  EXPECT_EQ(p.resolved.seed, 42u);
  EXPECT_EQ(p.size, "48x32");
  // seed -1 in a form draws one too.
  std::vector<FormPart> random_seed_parts = {field("prompt", "a cat"), field("seed", "-1")};
  const VideoPlan r = plan_video(parse_video_request(RequestFields::from_form(random_seed_parts)), tiny_model(), pipeline);
  EXPECT_LT(r.resolved.seed, uint64_t{1} << 32);

  const auto parse = [&](std::vector<FormPart> f) {
    plan_video(parse_video_request(RequestFields::from_form(std::move(f))), tiny_model(), pipeline);
  };
  expect_api_error([&] { parse({field("prompt", "x"), field("num_inference_steps", "2.0")}); }, 400,
                   "num_inference_steps");
  expect_api_error([&] { parse({field("prompt", "x"), field("seed", "-3")}); }, 400, "seed");
  expect_api_error([&] { parse({field("prompt", "x"), field("seconds", "4s")}); }, 400, "seconds");
  expect_api_error([&] { parse({field("prompt", "x"), field("prompt", "y")}); }, 400, "prompt");
  expect_api_error([&] { parse({field("prompt", "bad \xff\xfe utf8")}); }, 400, "prompt");
  expect_api_error([&] { parse({field("prompt", "x"), field("style", "vivid")}); }, 422, "style");
}

TEST(ServingRequests, ImagePlan) {
  const ImagePlan p = plan_image_json(
      R"({"prompt": "a cat", "size": "48x32", "n": 3, "output_format": "webp", "output_compression": 70,
          "response_format": "b64_json", "quality": "high", "user": "me", "seed": 5, "num_inference_steps": 2})");
  EXPECT_EQ(p.resolved.num_frames, 1);
  EXPECT_EQ(p.n, 3);
  EXPECT_EQ(p.output_format, vgen::media::ImageFormat::WEBP);
  EXPECT_EQ(p.quality, 70);
  EXPECT_EQ(p.size, "48x32");
  EXPECT_EQ(p.resolved.seed, 5u);
  EXPECT_EQ(plan_image_json(R"({"prompt": "x"})").output_format, vgen::media::ImageFormat::PNG);

  expect_api_error([] { plan_image_json(R"({"prompt": "x", "n": 11})"); }, 400, "n");
  expect_api_error([] { plan_image_json(R"({"prompt": "x", "n": 0})"); }, 400, "n");
  expect_api_error([] { plan_image_json(R"({"prompt": "x", "output_format": "gif"})"); }, 400, "output_format");
  expect_api_error([] { plan_image_json(R"({"prompt": "x", "output_format": "jpg"})"); }, 400, "output_format");
  expect_api_error([] { plan_image_json(R"({"prompt": "x", "quality": "ultra"})"); }, 400, "quality");
  expect_api_error([] { plan_image_json(R"({"prompt": "x", "seconds": 4})"); }, 422, "seconds");
  EXPECT_TRUE(plan_image_json(R"({"prompt": "x", "response_format": "url"})").url);
  EXPECT_FALSE(plan_image_json(R"({"prompt": "x", "response_format": "b64_json"})").url);
  const std::string m =
      expect_api_error([] { plan_image_json(R"({"prompt": "x", "response_format": "uri"})"); }, 400, "response_format");
  EXPECT_NE(m.find("'b64_json' or 'url'"), std::string::npos) << m;
}

TEST(ServingRequests, EditsNeedAnImageAndAnEditingModel) {
  FakePipeline pipeline;
  const auto edit = [&](std::vector<FormPart> parts) {
    plan_image(parse_image_request(RequestFields::from_form(std::move(parts)), true), tiny_model(), pipeline);
  };
  expect_api_error([&] { edit({field("prompt", "x")}); }, 400, "image");
  const std::string m =
      expect_api_error([&] { edit({field("prompt", "x"), {"image[]", "a.png", "image/png", "png"}}); }, 400, "image");
  EXPECT_NE(m.find("cannot edit images"), std::string::npos) << m;
}

// An image-to-image model (FLUX.1 Kontext) takes edits: the one 'image' part becomes the
// pipeline's input image; a mask, two images or an unreadable one are refused naming the field.
TEST(ServingRequests, EditsOfAnImageToImageModelTakeTheImage) {
  vgen::PipelineCapabilities c = vgen::testing::fake_capabilities();
  c.tasks = {"text-to-image", "image-to-image"};
  c.image_input = true;
  FakePipeline kontext(std::chrono::milliseconds(1), c);
  const auto edit = [&](std::vector<FormPart> parts) {
    return plan_image(parse_image_request(RequestFields::from_form(std::move(parts)), true), tiny_model(), kontext);
  };
  using vgen::DType, vgen::Shape, vgen::Tensor;
  namespace media = vgen::media;
  Tensor rgb = Tensor::zeros({16, 20, 3}, DType::U8);
  rgb.data<uint8_t>()[5] = 200;
  const std::vector<uint8_t> png = media::encode_image(rgb, media::ImageFormat::PNG);
  const FormPart image{"image", "a.png", "image/png", std::string(png.begin(), png.end())};
  const ImagePlan plan = edit({field("prompt", "make it night"), image});
  ASSERT_TRUE(plan.resolved.image.defined());
  EXPECT_EQ(plan.resolved.image.shape(), (Shape{16, 20, 3}));
  EXPECT_EQ(plan.resolved.image.data<uint8_t>()[5], 200);
  EXPECT_EQ(plan.resolved.num_frames, 1);
  FormPart image2 = image;
  image2.name = "image[]";
  expect_api_error([&] { edit({field("prompt", "x"), image, image2}); }, 400, "image");
  expect_api_error([&] { edit({field("prompt", "x"), image, {"mask", "m.png", "image/png", image.content}}); }, 400,
                   "mask");
  expect_api_error([&] { edit({field("prompt", "x"), {"image", "a.png", "image/png", "not an image"}}); }, 400, "image");
  // Under the pipeline's spatial multiple (16) on a side: nothing would be left to edit.
  const std::vector<uint8_t> small = media::encode_image(Tensor::zeros({15, 40, 3}, DType::U8), media::ImageFormat::PNG);
  const std::string m = expect_api_error(
      [&] { edit({field("prompt", "x"), {"image", "s.png", "image/png", std::string(small.begin(), small.end())}}); },
      400, "image");
  EXPECT_NE(m.find("40x15"), std::string::npos) << m;
}

TEST(ServingVideoId, NewIdsAreValidAndDistinct) {
  const std::string a = new_video_id(), b = new_video_id();
  EXPECT_TRUE(is_valid_video_id(a)) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("video_", 0), 0u);
}

TEST(ServingVideoId, StrictValidation) {
  EXPECT_TRUE(is_valid_video_id("video_0123456789abcdef"));
  EXPECT_TRUE(is_valid_video_id("video_" + std::string(64, 'Z')));
  for (const std::string& bad : std::vector<std::string>{"", "video_", "video_abc", "video_" + std::string(65, 'a'), "VIDEO_0123456789abcdef",
                                "video_0123456789abcde/", "video_../../../etc/passwd", "video_0123456789abcdef.mp4",
                                "video_0123456789abcd%2F", "image_0123456789abcdef", std::string("video_0123456789abcde\0", 22),
                                "video_0123456789abcdéf"})
    EXPECT_FALSE(is_valid_video_id(bad)) << bad;
}

// Issue 20, items 1 and 9: hostile bodies are refused before the parser allocates per level,
// and text fields that every Video object echoes are bounded.
TEST(ServingRequests, DeepOrLargeJsonIsRefusedBeforeParsing) {
  const std::string deep(10u << 20, '[');  // 10 MiB of '[' cost ~0.7 GB per request when parsed
  std::string m = expect_api_error([&] { RequestFields::from_json(deep); }, 413);
  EXPECT_NE(m.find("at most"), std::string::npos) << m;
  const std::string deep_small = "{\"prompt\": " + std::string(100000, '[') + "}";
  m = expect_api_error([&] { RequestFields::from_json(deep_small); }, 400);
  EXPECT_NE(m.find("deeper than 32"), std::string::npos) << m;
  // Brackets inside strings are text, not nesting.
  EXPECT_NO_THROW(RequestFields::from_json("{\"prompt\": \"" + std::string(1000, '[') + "\\\"]\"}"));
  std::string nested = "{\"a\": ";
  for (int i = 0; i < 30; ++i) nested += "[";
  for (int i = 0; i < 30; ++i) nested += "]";
  EXPECT_NO_THROW(RequestFields::from_json(nested + "}"));
}

TEST(ServingRequests, PromptLengthIsBounded) {
  const std::string ok(4000, 'a'), too_long(4001, 'a');
  EXPECT_NO_THROW(plan_json("{\"prompt\": \"" + ok + "\"}"));
  std::string m = expect_api_error([&] { plan_json("{\"prompt\": \"" + too_long + "\"}"); }, 400, "prompt");
  EXPECT_NE(m.find("at most 4000"), std::string::npos) << m;
  expect_api_error([&] { plan_json("{\"prompt\": \"x\", \"negative_prompt\": \"" + too_long + "\"}"); }, 400,
                   "negative_prompt");
  // Characters, not bytes: 4000 two-byte characters are accepted.
  std::string accents;
  for (int i = 0; i < 4000; ++i) accents += "\u00e9";
  EXPECT_NO_THROW(plan_json("{\"prompt\": \"" + accents + "\"}"));
}

// An explicit schedule: a JSON array of numbers, or comma-separated text in a form; the steps
// follow its length. Anything else is a 400 naming the field.
TEST(ServingRequests, TimestepsAndSigmas) {
  FakePipeline pipeline;
  const VideoPlan j = plan_json(R"({"prompt": "x", "timesteps": [1000, 750, 500, 250], "guidance_scale": 1})");
  EXPECT_EQ(*j.resolved.timesteps, (std::vector<double>{1000, 750, 500, 250}));
  EXPECT_FALSE(j.resolved.sigmas.has_value());
  EXPECT_EQ(j.resolved.num_inference_steps, 4);
  EXPECT_EQ(j.extras()["timesteps"], nlohmann::json::parse("[1000.0, 750.0, 500.0, 250.0]"));
  const VideoPlan s = plan_json(R"({"prompt": "x", "sigmas": [1, 0.5]})");
  EXPECT_EQ(*s.resolved.sigmas, (std::vector<double>{1.0, 0.5}));
  EXPECT_EQ(s.resolved.num_inference_steps, 2);

  const std::vector<FormPart> parts = {field("prompt", "a cat"), field("timesteps", "1000,750,500,250"),
                                       field("sigmas", "1,0.9375,0.8333,0.625")};
  const VideoPlan f = plan_video(parse_video_request(RequestFields::from_form(parts)), tiny_model(), pipeline);
  EXPECT_EQ(*f.resolved.timesteps, (std::vector<double>{1000, 750, 500, 250}));
  EXPECT_EQ(*f.resolved.sigmas, (std::vector<double>{1, 0.9375, 0.8333, 0.625}));

  for (const char* body : {R"({"prompt": "x", "timesteps": "1000,750"})", R"({"prompt": "x", "timesteps": [1000, "a"]})",
                           R"({"prompt": "x", "timesteps": []})", R"({"prompt": "x", "timesteps": 1000})",
                           R"({"prompt": "x", "timesteps": [[1000]]})"}) {
    SCOPED_TRACE(body);
    expect_api_error([&] { plan_json(body); }, 400, "timesteps");
  }
  expect_api_error([&] { plan_json(R"({"prompt": "x", "sigmas": [true]})"); }, 400, "sigmas");
  const auto parse = [&](std::vector<FormPart> p) {
    plan_video(parse_video_request(RequestFields::from_form(std::move(p))), tiny_model(), pipeline);
  };
  for (const char* text : {"1000,,250", "", "1000;750", "1000, 750", "1000,", "nan"}) {
    SCOPED_TRACE(text);
    expect_api_error([&] { parse({field("prompt", "x"), field("timesteps", text)}); }, 400, "timesteps");
  }
  const std::string m = expect_api_error([&] { parse({field("prompt", "x"), field("sigmas", "1,x")}); }, 400, "sigmas");
  EXPECT_NE(m.find("'sigmas' must be a list of 1 to 1000 numbers (comma-separated in a form), got '1,x'"),
            std::string::npos)
      << m;
}

// `lora` / `lora_2`: NAME[:SCALE],... resolved against the server's adapters; every refusal a 400
// naming the field.
TEST(ServingRequests, LoraAdaptersByName) {
  vgen::PipelineCapabilities caps = vgen::testing::fake_capabilities();
  caps.lora = true;
  FakePipeline pipeline(std::chrono::milliseconds(1), caps);
  ModelInfo model = tiny_model();
  model.adapters = {{"fast", "/loras/fast.safetensors"}, {"style", "/loras/style.safetensors"}};
  auto plan = [&](const std::string& body, const vgen::DiffusionPipeline& p) {
    return plan_video(parse_video_request(RequestFields::from_json(body)), model, p);
  };
  const VideoPlan v = plan(R"({"prompt": "x", "lora": "fast:0.5,style"})", pipeline);
  ASSERT_EQ(v.adapters.lora.size(), 2u);
  EXPECT_EQ(v.adapters.lora[0].path, "/loras/fast.safetensors");
  EXPECT_EQ(v.adapters.lora[0].scale, 0.5);
  EXPECT_EQ(v.adapters.lora[1].path, "/loras/style.safetensors");
  EXPECT_EQ(v.adapters.lora[1].scale, 1.0);
  EXPECT_TRUE(plan(R"({"prompt": "x"})", pipeline).adapters.lora.empty());

  std::string m = expect_api_error([&] { plan(R"({"prompt": "x", "lora": "slow"})", pipeline); }, 400, "lora");
  EXPECT_NE(m.find("served: fast, style"), std::string::npos) << m;
  expect_api_error([&] { plan(R"({"prompt": "x", "lora": "fast:lots"})", pipeline); }, 400, "lora");
  m = expect_api_error([&] { plan(R"({"prompt": "x", "lora_2": "fast"})", pipeline); }, 400, "lora_2");
  EXPECT_NE(m.find("one transformer"), std::string::npos) << m;
  FakePipeline no_lora;  // a family without adapters
  m = expect_api_error([&] { plan(R"({"prompt": "x", "lora": "fast"})", no_lora); }, 400, "lora");
  EXPECT_NE(m.find("takes no LoRA adapters"), std::string::npos) << m;
  model.adapters.clear();
  m = expect_api_error([&] { plan(R"({"prompt": "x", "lora": "fast"})", pipeline); }, 400, "lora");
  EXPECT_NE(m.find("--lora-dir"), std::string::npos) << m;
}

// Step caching per request: TaylorSeer's cache_interval (its only knob there; it has no threshold).
TEST(ServingRequests, CacheIntervalIsTaylorSeers) {
  const VideoRequest r = parse_video_request(
      RequestFields::from_json(R"({"prompt": "x", "cache_backend": "taylorseer", "cache_interval": 4})"));
  EXPECT_EQ(r.cache_backend, "taylorseer");
  EXPECT_EQ(r.cache_interval, 4);
  expect_api_error([] { parse_video_request(RequestFields::from_json(R"({"prompt": "x", "cache_interval": 0})")); },
                   400, "cache_interval");
  const std::string m = expect_api_error(
      [] { plan_json(R"({"prompt": "x", "cache_backend": "fbcache", "cache_interval": 3})"); }, 400, "cache_interval");
  EXPECT_NE(m.find("'cache_interval' applies to cache_backend 'taylorseer' only"), std::string::npos) << m;
  expect_api_error([] { plan_json(R"({"prompt": "x", "cache_interval": 3})"); }, 400, "cache_interval");
}
