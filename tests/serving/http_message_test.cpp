// The transport-independent pieces of the HTTP layer: request targets, multipart/form-data
// bodies (RFC 7578) and byte ranges (RFC 9110 14), against hand-written messages.
#include <gtest/gtest.h>

#include "serving/api_error.h"
#include "serving/http_message.h"
#include "serving/http_server.h"

using namespace vgen::serving;

TEST(HttpMessage, TargetIsDecoded) {
  std::string path;
  std::multimap<std::string, std::string> params;
  ASSERT_TRUE(parse_target("/v1/videos/a%2Fb%00c?after=x%20y&limit=1+2&flag&=v", path, params));
  EXPECT_EQ(path, std::string("/v1/videos/a/b\0c", 16));
  EXPECT_EQ(params.find("after")->second, "x y");
  EXPECT_EQ(params.find("limit")->second, "1 2");  // '+' is a space in the query only
  EXPECT_EQ(params.find("flag")->second, "");
  EXPECT_EQ(params.count(""), 1u);
  ASSERT_TRUE(parse_target("/a+b%zz%4", path, params));
  EXPECT_EQ(path, "/a+b%zz%4");  // malformed escapes are kept as sent
  EXPECT_TRUE(params.empty());
  EXPECT_FALSE(parse_target("http://example.com/", path, params));
  EXPECT_FALSE(parse_target("*", path, params));
}

TEST(HttpMessage, HeadersAreCaseInsensitive) {
  HttpRequest req;
  req.headers = {{"content-TYPE", "Multipart/Form-Data; boundary=x"}, {"X-A", "1"}, {"x-a", "2"}};
  EXPECT_TRUE(req.has_header("Content-Type"));
  EXPECT_TRUE(req.is_multipart_form_data());
  EXPECT_EQ(req.get_header_value("X-a"), "1");
  HttpResponse res;
  res.set_header("Retry-After", "1");
  res.set_header("retry-after", "2");
  EXPECT_EQ(res.headers.size(), 1u);
  EXPECT_EQ(res.get_header_value("RETRY-AFTER"), "2");
}

TEST(HttpMessage, MultipartParts) {
  const std::string body =
      "preamble\r\n"
      "--AaB03x\r\n"
      "Content-Disposition: form-data; name=\"prompt\"\r\n"
      "\r\n"
      "a cat\r\non two lines\r\n"
      "--AaB03x\r\n"
      "content-disposition: form-data; name=\"input_reference\"; filename=\"c\\\"at.png\"\r\n"
      "Content-Type: image/png\r\n"
      "\r\n"
      "\x89PNG\r\n\x1a\n--AaB03"
      "\r\n"
      "--AaB03x\r\n"
      "Content-Disposition: form-data; name=empty\r\n"
      "\r\n"
      "\r\n"
      "--AaB03x--\r\n"
      "epilogue";
  const std::vector<FormPart> parts = parse_multipart(body, "multipart/form-data; boundary=\"AaB03x\"");
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].name, "prompt");
  EXPECT_EQ(parts[0].filename, "");
  EXPECT_EQ(parts[0].content, "a cat\r\non two lines");
  EXPECT_EQ(parts[1].name, "input_reference");
  EXPECT_EQ(parts[1].filename, "c\"at.png");
  EXPECT_EQ(parts[1].content_type, "image/png");
  EXPECT_EQ(parts[1].content, "\x89PNG\r\n\x1a\n--AaB03");  // a boundary prefix is content
  EXPECT_EQ(parts[2].name, "empty");
  EXPECT_EQ(parts[2].content, "");
}

TEST(HttpMessage, MultipartBinaryContent) {
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\r\n--x", 16);
  const std::string body = "--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n\r\n" + png +
                           "\r\n--xyz--";
  const std::vector<FormPart> parts = parse_multipart(body, "multipart/form-data; boundary=xyz");
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].content, png);
}

TEST(HttpMessage, MalformedMultipartIsA400) {
  const auto status_of = [](const std::string& body, const std::string& type) {
    try {
      parse_multipart(body, type);
      return 0;
    } catch (const ApiError& e) {
      return e.status;
    }
  };
  const std::string type = "multipart/form-data; boundary=b";
  const std::string part = "--b\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nx\r\n";
  EXPECT_EQ(status_of(part + "--b--", type), 0);
  EXPECT_EQ(status_of(part + "--b--", "multipart/form-data"), 400);  // no boundary
  EXPECT_EQ(status_of(part, type), 400);                              // no closing boundary
  EXPECT_EQ(status_of("--b\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\n" + std::string(50000, '['), type),
            400);
  EXPECT_EQ(status_of("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", type), 400);  // no name
  EXPECT_EQ(status_of("--b\r\nContent-Disposition: attachment; name=p\r\n\r\nx\r\n--b--", type), 400);
  EXPECT_EQ(status_of("--b\r\nX-Big: " + std::string(kMaxFormPartHeaderBytes, 'a') + "\r\n\r\nx\r\n--b--", type), 400);
  EXPECT_EQ(status_of("nothing here", type), 400);
  std::string many;
  for (size_t i = 0; i <= kMaxFormParts; ++i) many += "--b\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nx\r\n";
  EXPECT_EQ(status_of(many + "--b--", type), 400);  // over the part count
}

TEST(HttpMessage, ByteRanges) {
  const auto ranged = [](const std::string& range, const std::string& method = "GET") {
    HttpRequest req;
    req.method = method;
    req.headers = {{"Range", range}};
    HttpResponse res;
    res.set_content("0123456789", "video/mp4");
    apply_range(req, res);
    return res;
  };
  HttpResponse r = ranged("bytes=2-4");
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, "234");
  EXPECT_EQ(r.get_header_value("Content-Range"), "bytes 2-4/10");
  EXPECT_EQ(r.get_header_value("Content-Type"), "video/mp4");
  r = ranged("bytes=7-");
  EXPECT_EQ(r.body, "789");
  EXPECT_EQ(r.get_header_value("Content-Range"), "bytes 7-9/10");
  r = ranged("bytes=-3");
  EXPECT_EQ(r.body, "789");
  r = ranged("bytes=5-100");  // the end is clamped
  EXPECT_EQ(r.body, "56789");
  EXPECT_EQ(r.get_header_value("Content-Range"), "bytes 5-9/10");
  r = ranged("bytes=-100");
  EXPECT_EQ(r.body, "0123456789");
  EXPECT_EQ(r.status, 206);
  r = ranged("bytes=10-");
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.get_header_value("Content-Range"), "bytes */10");
  for (const char* ignored : {"bytes=0-1,4-5", "items=0-1", "bytes=4-2", "bytes=x-1", "bytes=-0"}) {
    r = ranged(ignored);
    EXPECT_EQ(r.status, 200) << ignored;
    EXPECT_EQ(r.body, "0123456789") << ignored;
  }
  EXPECT_EQ(ranged("bytes=0-1", "POST").status, 200);
}
