// diffusers' Wan prompt cleaning (pipeline_wan.py: prompt_clean = whitespace_clean(basic_clean(text))).
#pragma once

#include <string>
#include <string_view>

namespace vgen {

// Python's html.unescape on UTF-8 text: numeric references (&#NNN; &#xHH;, with the HTML5
// replacements for invalid code points) exactly; named references for the HTML 4 set plus
// &apos;, including the legacy forms without ';' (&amp, &lt, ...). The rest of the 2,231 HTML5
// names (&NewLine;, &bigstar;, ...) are left as written.
std::string html_unescape(std::string_view text);

// diffusers' Wan prompt_clean: html.unescape twice, strip, collapse every run of Unicode
// whitespace to one space, strip. ftfy.fix_text is not applied (diffusers only runs it when
// ftfy is installed; the reference fixtures are made without it). Throws vgen::Error when
// `text` is not valid UTF-8.
std::string wan_prompt_clean(const std::string& text);

}  // namespace vgen
