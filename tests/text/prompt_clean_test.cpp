// wan_prompt_clean against diffusers' Wan prompt_clean (ftfy not installed, as in the fixtures).
#include "text/prompt_clean.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/json.h"
#include "support/parity.h"

using namespace vgen;

TEST(WanPromptClean, MatchesDiffusers) {
  const Json extra = read_json_file(vgen::testing::fixture("wan21_t2v_tiny_ref/text_extra.json"));
  for (const Json& c : extra.at("prompt_clean_cases")) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE(text);
    EXPECT_EQ(wan_prompt_clean(text), c.at("cleaned").get<std::string>());
  }
  for (const char* name : {"wan21_t2v_tiny_ref", "wan21_t2v_tiny_b_ref"}) {
    const Json prompts = read_json_file(vgen::testing::fixture(std::string(name) + "/prompts.json"));
    for (size_t i = 0; i < prompts.at("prompts").size(); ++i)
      EXPECT_EQ(wan_prompt_clean(prompts["prompts"][i].get<std::string>()),
                prompts["prompts_cleaned"][i].get<std::string>());
    EXPECT_EQ(wan_prompt_clean(prompts.at("negative_prompt").get<std::string>()),
              prompts.at("negative_prompt_cleaned").get<std::string>());
  }
}

TEST(WanPromptClean, UnescapesTwiceAndCollapsesWhitespace) {
  EXPECT_EQ(wan_prompt_clean("  a &amp;amp; b\t\n c  "), "a & b c");
  EXPECT_EQ(wan_prompt_clean("&lt;tag&gt; &quot;q&quot; &#39;s&#39; &#x41;&#66;"), "<tag> \"q\" 's' AB");
  EXPECT_EQ(wan_prompt_clean("caf\u00e9\u3000\u00a0ok"), "caf\u00e9 ok");
  EXPECT_EQ(wan_prompt_clean(""), "");
  EXPECT_EQ(html_unescape("&amp &ampx &notit; &unknown; &#0; &#x110000;"), "& &x \u00acit; &unknown; \ufffd \ufffd");
  EXPECT_THROW(wan_prompt_clean("bad \xc3"), Error);
}
