// ConfigReader on JSON: defaults, types, null, ranges, lists, choices, unknown keys, and
// errors that name the file, the subject and the field. (The YAML side is held by
// tests/serving/engine_config_test.cpp through parse_engine_config.)
#include <gtest/gtest.h>

#include "io/config_reader.h"
#include "io/json.h"
#include "support/errors.h"

using namespace vgen;
using vgen::testing::error_of;
using vgen::testing::expect_error;

TEST(ConfigReader, AbsentFieldsTakeTheirDefaults) {
  const Json j = {{"n", 3}, {"x", 0.5}, {"flag", true}, {"name", "a"}, {"ints", {1, 2}}, {"opt", nullptr}};
  const ConfigReader r(j, "cfg.json");
  EXPECT_EQ(r.integer("n", 7), 3);
  EXPECT_EQ(r.integer("missing", 7), 7);
  EXPECT_DOUBLE_EQ(r.number("x", 1.0), 0.5);
  EXPECT_DOUBLE_EQ(r.number("n", 1.0), 3.0);  // an integer is a number
  EXPECT_TRUE(r.boolean("flag", false));
  EXPECT_EQ(r.string("name", "b"), "a");
  EXPECT_EQ(r.integer_list("ints"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(r.integer_list("missing", {9}), (std::vector<int64_t>{9}));
  EXPECT_FALSE(r.optional_number("opt").has_value());  // null: the Optional field is unset
  EXPECT_TRUE(r.present("opt"));
  EXPECT_FALSE(r.has("opt"));
}

TEST(ConfigReader, ErrorsNameFileSubjectAndField) {
  const Json j = {{"shift", "three"}, {"order", 2.5}, {"flag", 1}, {"steps", nullptr}, {"big", 5000000000LL}};
  const ConfigReader r(j, "/ckpt/scheduler_config.json", "UniPCMultistepScheduler");
  expect_error([&] { r.number("shift", 1.0); },
               "/ckpt/scheduler_config.json: UniPCMultistepScheduler field 'shift' must be a number, got \"three\"");
  expect_error([&] { r.integer("order", 1); }, "field 'order' must be an integer, got 2.5");
  expect_error([&] { r.boolean("flag", false); }, "field 'flag' must be true or false, got 1");
  // null is not a value for a field with a default (diffusers would pass None on).
  expect_error([&] { r.integer("steps", 1); }, "field 'steps' must be an integer, got null");
  expect_error([&] { r.int32("big", 1); }, "field 'big' must be in [-2147483648, 2147483647], got 5000000000");
  expect_error([&] { r.required_integer("absent"); }, "field 'absent' is required");
}

TEST(ConfigReader, RangesListsAndChoices) {
  const Json j = {{"layers", 0}, {"mult", {1, "x"}}, {"kind", "cubic"}, {"image_dim", 512}};
  const ConfigReader r(j, "config.json");
  expect_error([&] { r.integer("layers", 1, 1); }, "config.json: field 'layers' must be at least 1, got 0");
  EXPECT_EQ(r.integer("layers", 1, 0), 0);
  expect_error([&] { r.integer_list("mult"); }, "field 'mult[1]' must be an integer, got \"x\"");
  enum class Kind { Linear, Exponential };
  const std::vector<std::pair<std::string, Kind>> kinds = {{"linear", Kind::Linear}, {"exponential", Kind::Exponential}};
  expect_error([&] { r.choice("kind", Kind::Linear, kinds); }, "field 'kind' is \"cubic\", not one of: linear, exponential");
  EXPECT_EQ(r.choice("absent", Kind::Exponential, kinds), Kind::Exponential);
  expect_error([&] { r.require_absent("image_dim", "image-to-video is not supported yet"); },
               "field 'image_dim' = 512 is not supported: image-to-video is not supported yet");
  EXPECT_NO_THROW(r.require_absent("absent", "never"));
}

TEST(ConfigReader, UnknownKeysAndSections) {
  const Json j = {{"teacache", {{"enabled", true}, {"treshold", 0.1}}}, {"known", 1}};
  const ConfigReader r(j, "engine.json");
  const ConfigReader teacache = r.section("teacache");
  EXPECT_TRUE(teacache.boolean("enabled", false));
  EXPECT_DOUBLE_EQ(teacache.number("threshold", 0.2), 0.2);
  const std::string msg = error_of([&] { teacache.reject_unknown(); });
  EXPECT_NE(msg.find("field 'teacache.treshold' is not a known key (known keys of 'teacache': enabled, threshold)"),
            std::string::npos)
      << msg;
  r.integer("known", 0);
  EXPECT_NO_THROW(r.reject_unknown());  // every key was asked for
  // An absent section is empty; a section that is not an object is named.
  EXPECT_EQ(r.section("absent").integer("n", 4), 4);
  expect_error([&] { r.section("known"); }, "engine.json: expected a JSON object in field 'known', got 1");
  expect_error([] { ConfigReader(Json::array(), "c.json"); }, "c.json: expected a JSON object, got []");
}
