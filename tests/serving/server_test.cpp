// The HTTP server in-process with a fake pipeline: what the tiny model cannot show
// (loading takes time, generations can fail, load failures), checked over real HTTP.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "serving/fake_pipeline.h"
#include "serving/http_test_client.h"
#include "serving/server.h"

using namespace vgen::serving;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

ServeOptions options_for(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("vgen_server_" + name);
  fs::remove_all(dir);
  ServeOptions o;
  o.model = "/models/fake_model/";
  o.port = 0;
  o.media_dir = dir.string();
  return o;
}

ServedModel fake_model(std::chrono::milliseconds step_time = std::chrono::milliseconds(1)) {
  ServedModel m;
  m.info.id = "fake_model";
  m.pipeline = std::make_unique<vgen::testing::FakePipeline>(step_time);
  return m;
}

// A server running on its own thread for the scope of a test.
class RunningServer {
 public:
  RunningServer(const ServeOptions& options, ModelLoader loader)
      : server_(options, std::move(loader)), client_("127.0.0.1", server_.port()) {
    thread_ = std::thread([this] {
      try {
        server_.run();
      } catch (const std::exception& e) {
        run_error_ = e.what();
      }
    });
    client_.set_read_timeout(30);
  }
  ~RunningServer() { stop(); }

  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  vgen::testing::Client& client() { return client_; }
  int port() const { return server_.port(); }
  const std::string& run_error() const { return run_error_; }

 private:
  Server server_;
  vgen::testing::Client client_;
  std::thread thread_;
  std::string run_error_;
};

json body_of(const vgen::testing::Result& r) { return json::parse(r->body); }

void wait_until_ready(vgen::testing::Client& c) {
  for (int i = 0; i < 5000; ++i) {
    if (auto r = c.Get("/health"); r && r->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  FAIL() << "server not ready";
}

}  // namespace

TEST(ServingServer, AnswersWhileTheModelLoads) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  RunningServer s(options_for("loading"), [released] {
    released.wait();
    return fake_model();
  });
  vgen::testing::Client& c = s.client();
  auto r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(body_of(r)["status"], "loading");
  EXPECT_EQ(body_of(r)["error"]["code"], "model_loading");
  r = c.Get("/v1/models");
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(r->has_header("retry-after"));
  r = c.Post("/v1/videos", R"({"prompt": "x"})", "application/json");
  EXPECT_EQ(r->status, 503);
  r = c.Get("/metrics");
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("vgen_model_ready 0"), std::string::npos);

  release.set_value();
  wait_until_ready(c);
  r = c.Get("/v1/models");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["data"][0]["id"], "fake_model");
  EXPECT_NE(c.Get("/metrics")->body.find("vgen_model_ready 1"), std::string::npos);
}

TEST(ServingServer, ModelLoadFailureEndsRun) {
  RunningServer s(options_for("load_failure"), []() -> ServedModel { vgen::fail("model_index.json: broken"); });
  s.stop();
  EXPECT_NE(s.run_error().find("model_index.json: broken"), std::string::npos) << s.run_error();
}

TEST(ServingServer, FailedGenerations) {
  RunningServer s(options_for("failures"), [] { return fake_model(); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);

  auto r = c.Post("/v1/videos", R"({"prompt": "fail", "num_inference_steps": 3})", "application/json");
  ASSERT_EQ(r->status, 200);
  const std::string id = body_of(r)["id"];
  json v;
  for (int i = 0; i < 5000; ++i) {
    v = body_of(c.Get("/v1/videos/" + id));
    if (v["status"] == "failed" || v["status"] == "completed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(v["status"], "failed");
  EXPECT_EQ(v["error"]["code"], "generation_failed");
  EXPECT_NE(v["error"]["message"].get<std::string>().find("simulated failure at step 1"), std::string::npos) << v;
  EXPECT_FALSE(v["completed_at"].is_null());
  r = c.Get("/v1/videos/" + id + "/content");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(r->get_header_value("x-should-retry"), "false");
  EXPECT_EQ(body_of(r)["error"]["code"], "video_failed");

  // The synchronous endpoints answer 500 with the reason, and the SDK is told not to retry.
  r = c.Post("/v1/videos/generations", R"({"prompt": "fail"})", "application/json");
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->get_header_value("x-should-retry"), "false");
  EXPECT_EQ(body_of(r)["error"]["type"], "server_error");
  EXPECT_NE(body_of(r)["error"]["message"].get<std::string>().find("simulated failure"), std::string::npos);
  r = c.Post("/v1/images/generations", R"({"prompt": "fail"})", "application/json");
  EXPECT_EQ(r->status, 500);

  // And the worker goes on.
  r = c.Post("/v1/videos/generations", R"({"prompt": "ok", "num_frames": 1})", "application/json");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "video/mp4");
  const std::string metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("vgen_generations_total{kind=\"video\",result=\"failed\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("vgen_generations_total{kind=\"video_sync\",result=\"completed\"} 1"), std::string::npos);
}

// Both get their 503. The running one used to lose it in a few stops out of 12 (issue 20): its
// answer came after the acceptor was closed, when the io_context could already have run out of
// work and stopped; http_server_test.cpp has the deterministic form of that race.
TEST(ServingServer, StopAnswersWaitingSyncRequests) {
  RunningServer s(options_for("stop_sync"), [] { return fake_model(std::chrono::milliseconds(50)); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  // A long sync job runs; a second one waits in the queue; stop() must answer both.
  auto first = std::async(std::launch::async, [&] {
    vgen::testing::Client c1("127.0.0.1", s.port());
    c1.set_read_timeout(30);
    return c1.Post("/v1/videos/generations", R"({"prompt": "a", "num_inference_steps": 1000})", "application/json");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = std::async(std::launch::async, [&] {
    vgen::testing::Client c2("127.0.0.1", s.port());
    c2.set_read_timeout(30);
    return c2.Post("/v1/images/generations", R"({"prompt": "b"})", "application/json");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  s.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (auto* f : {&first, &second}) {
    vgen::testing::Result r = f->get();
    ASSERT_TRUE(r) << (f == &first ? "the running request" : "the queued request") << " got no answer";
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "server_shutting_down");
  }
}

// While stop() waits for the running generation's step to end, the server still accepts
// connections: a new generation request (sync or async) gets 503 server_shutting_down, not a
// 429 "queue full" that a client would retry; the running one gets its 503 too.
TEST(ServingServer, GenerationRequestsDuringStopAre503) {
  RunningServer s(options_for("stop_new_requests"), [] { return fake_model(std::chrono::milliseconds(2000)); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  auto running = std::async(std::launch::async, [&] {
    vgen::testing::Client c1("127.0.0.1", s.port());
    c1.set_read_timeout(30);
    return c1.Post("/v1/images/generations", R"({"prompt": "a", "num_inference_steps": 100})", "application/json");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its first step is under way
  auto stopped = std::async(std::launch::async, [&] { s.stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the queue is shutting down
  for (const char* path : {"/v1/videos", "/v1/images/generations"}) {
    vgen::testing::Result r = c.Post(path, R"({"prompt": "b"})", "application/json");
    ASSERT_TRUE(r) << path << " got no answer";
    EXPECT_EQ(r->status, 503) << path << ": " << r->body;
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "server_shutting_down") << path;
  }
  stopped.get();
  vgen::testing::Result r = running.get();
  ASSERT_TRUE(r) << "the running request got no answer";
  EXPECT_EQ(r->status, 503);
}

TEST(ServingServer, ServedModelNameAndApiKey) {
  ServeOptions o = options_for("named");
  o.served_model_name = "wan-fake";
  o.api_key = "sk-test";
  RunningServer s(o, [] {
    ServedModel m = fake_model();
    m.info.id = "wan-fake";
    return m;
  });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  c.set_bearer_token_auth("sk-test");
  EXPECT_EQ(c.Get("/v1/models/wan-fake")->status, 200);
  EXPECT_EQ(c.Get("/v1/models/other")->status, 404);
  auto r = c.Post("/v1/videos", R"({"prompt": "x", "model": "wan-fake", "num_frames": 1})", "application/json");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["model"], "wan-fake");
  EXPECT_EQ(body_of(r)["status"], "queued");
  EXPECT_EQ(body_of(r)["num_frames"], 1);
}

TEST(ServingServer, MediaDirectoryIsExclusive) {
  const ServeOptions o = options_for("exclusive");
  Server first(o, [] { return fake_model(); });
  try {
    Server second(o, [] { return fake_model(); });
    ADD_FAILURE() << "two servers share " << o.media_dir;
  } catch (const vgen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another vgen server"), std::string::npos) << e.what();
  }
}

// /v1/models and the Video object describe the served pipeline's capabilities: a model at
// 24 fps on a grid of 8k+1 frames answers with those, and plans `seconds` on that grid.
TEST(ServingServer, ModelsAndVideosFollowThePipelineCapabilities) {
  RunningServer s(options_for("capabilities"), [] {
    vgen::PipelineCapabilities caps = vgen::testing::fake_capabilities();
    caps.default_fps = 24.0;
    caps.temporal_multiple = 8;
    caps.default_num_frames = 9;
    ServedModel m;
    m.info.id = "fake_model";
    m.pipeline = std::make_unique<vgen::testing::FakePipeline>(std::chrono::milliseconds(1), caps);
    return m;
  });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  const json model = body_of(c.Get("/v1/models"))["data"][0];
  EXPECT_EQ(model["id"], "fake_model");
  EXPECT_EQ(model["capabilities"]["tasks"], json::array({"text-to-video"}));
  EXPECT_EQ(model["capabilities"]["default_fps"], 24.0);
  EXPECT_EQ(model["capabilities"]["temporal_multiple"], 8);
  EXPECT_EQ(model["capabilities"]["spatial_multiple"], 16);
  EXPECT_EQ(model["capabilities"]["inputs"]["image"], false);
  EXPECT_EQ(body_of(c.Get("/v1/models/fake_model")), model);
  // 1 s at 24 fps: 24 frames -> 25 on the 8k+1 grid.
  auto r = c.Post("/v1/videos", R"({"prompt": "x", "seconds": "1"})", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_of(r)["num_frames"], 25);
  EXPECT_EQ(body_of(r)["fps"], 24.0);
  EXPECT_EQ(body_of(r)["seconds"], "1");
}

namespace {

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the server sends until it closes the connection (or `timeout` passes).
std::string read_until_closed(int fd, std::chrono::milliseconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) in.append(buf, static_cast<size_t>(n));
  return in;
}

}  // namespace

// Issue 20: connections that send their headers slowly hold no handler thread, and are closed
// at the header deadline; a body that stops coming gets its 408 at the body deadline.
TEST(ServingServer, SlowClientsHitDeadlinesAndHoldNoThread) {
  ServeOptions o = options_for("deadlines");
  o.max_queue = 1;  // 33 handler threads
  o.header_timeout = std::chrono::milliseconds(1500);
  o.body_timeout = std::chrono::milliseconds(500);
  RunningServer s(o, [] { return fake_model(); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  constexpr int kSlow = 200;  // more than the handler threads
  std::vector<int> slow;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kSlow; ++i) {
    const int fd = connect_to(s.port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a", 48, MSG_NOSIGNAL), 48);
    slow.push_back(fd);
  }
  // While they hang, requests are answered at once.
  for (int i = 0; i < 20; ++i) {
    const auto t = std::chrono::steady_clock::now();
    auto r = c.Get("/health");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t, std::chrono::milliseconds(500));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1400)) << "too slow to test the deadline";
  // Each is closed at its header deadline, with nothing sent.
  for (int fd : slow) {
    EXPECT_EQ(read_until_closed(fd, std::chrono::milliseconds(5000)), "");
    ::close(fd);
  }
  const auto closed_after = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(closed_after, std::chrono::milliseconds(1400));
  EXPECT_LT(closed_after, std::chrono::milliseconds(4000));

  // A body that stops: 408 once the body deadline passes.
  const int fd = connect_to(s.port());
  const std::string head =
      "POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  const auto t1 = std::chrono::steady_clock::now();
  const std::string answer = read_until_closed(fd, std::chrono::milliseconds(5000));
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"request_timeout\""), std::string::npos) << answer;
  EXPECT_GE(std::chrono::steady_clock::now() - t1, std::chrono::milliseconds(400));
}

// Downloads answer a single byte range (players and resumable downloads ask for them).
TEST(ServingServer, ContentByteRanges) {
  RunningServer s(options_for("ranges"), [] { return fake_model(); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  auto r = c.Post("/v1/videos", R"({"prompt": "x", "num_frames": 1})", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string id = body_of(r)["id"];
  for (int i = 0; i < 5000 && body_of(c.Get("/v1/videos/" + id))["status"] != "completed"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto full = c.Get("/v1/videos/" + id + "/content");
  ASSERT_EQ(full->status, 200);
  EXPECT_EQ(full->get_header_value("Content-Type"), "video/mp4");
  const std::string mp4 = full->body;
  ASSERT_GT(mp4.size(), 100u);
  r = c.Get("/v1/videos/" + id + "/content", {{"Range", "bytes=10-109"}});
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, mp4.substr(10, 100));
  EXPECT_EQ(r->get_header_value("Content-Range"), "bytes 10-109/" + std::to_string(mp4.size()));
  EXPECT_EQ(r->get_header_value("Content-Length"), "100");
  r = c.Get("/v1/videos/" + id + "/content", {{"Range", "bytes=-16"}});
  EXPECT_EQ(r->body, mp4.substr(mp4.size() - 16));
  r = c.Get("/v1/videos/" + id + "/content", {{"Range", "bytes=" + std::to_string(mp4.size()) + "-"}});
  EXPECT_EQ(r->status, 416);
  EXPECT_EQ(body_of(r)["error"]["code"], "range_not_satisfiable");
  // HEAD: the headers of the GET, no body.
  r = c.send("HEAD", "/v1/videos/" + id + "/content", "", "", {});
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Length"), std::to_string(mp4.size()));
  EXPECT_EQ(r->body, "");
}

// Requests the HTTP layer refuses before any handler: each in OpenAI's error shape.
TEST(ServingServer, MalformedRequestsAreRefused) {
  RunningServer s(options_for("malformed"), [] { return fake_model(); });
  vgen::testing::Client& c = s.client();
  wait_until_ready(c);
  auto r = c.raw("GARBAGE\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(body_of(r)["error"]["type"], "invalid_request_error");
  r = c.raw("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_EQ(body_of(r)["error"]["code"], "headers_too_large");
  r = c.raw("BREW /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(r->status, 501);
  // A chunked JSON body past the 256 KiB JSON limit: 413 (the limit holds without a length).
  std::string chunked = "POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) chunked += "10000\r\n" + std::string(65536, ' ') + "\r\n";
  r = c.raw(chunked + "0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(body_of(r)["error"]["code"], "request_too_large");
  // A small chunked JSON body is read.
  r = c.raw("POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n1b\r\nmpt\": \"x\", \"num_frames\": 1}\r\n0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body_of(r)["status"], "queued");
}
