// HttpServer's stop(): a request whose handler is still running when stop() is called gets
// its answer, whatever else the I/O threads have (or do not have) to do at that moment.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "serving/http_server.h"
#include "serving/http_test_client.h"

using namespace vgen::serving;
using namespace std::chrono_literals;

namespace {

HttpHandlers handlers_with(std::function<void(HttpRequest&, HttpResponse&)> handle) {
  HttpHandlers h;
  h.before_body = [](const HttpRequest&, HttpResponse&, size_t& limit) {
    limit = 1024;
    return false;
  };
  h.handle = std::move(handle);
  return h;
}

}  // namespace

// Issue 20's race, made deterministic: the only connection is in its handler (on the pool,
// nothing of it pending on the io_context) when stop() closes the acceptor, and the handler
// answers a moment later. Before the fix, the io_context ran out of work as soon as the
// acceptor was closed, run() returned and closed the socket: the client got no answer.
TEST(HttpServer, StopWaitsForTheAnswerOfARunningHandler) {
  std::atomic<bool> entered{false}, stopping{false};
  HttpServer server(HttpServerOptions{}, handlers_with([&](HttpRequest&, HttpResponse& res) {
                      entered = true;
                      while (!stopping) std::this_thread::sleep_for(1ms);
                      std::this_thread::sleep_for(200ms);  // the acceptor is closed by now
                      res.status = 503;
                      res.set_content("shutting down", "text/plain");
                    }));
  std::thread runner([&] { server.run(); });
  auto answer = std::async(std::launch::async, [port = server.port()] {
    vgen::testing::Client c("127.0.0.1", port);
    c.set_read_timeout(10);
    return c.Post("/work", "{}", "application/json");
  });
  for (int i = 0; i < 5000 && !entered; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(entered) << "the request never reached its handler";
  stopping = true;
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  const vgen::testing::Result r = answer.get();
  ASSERT_TRUE(r) << "the request whose handler was running at stop() got no answer";
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "shutting down");
}

// stop() before run(): run() returns at once, and stop() does not wait for work never started.
TEST(HttpServer, StopBeforeRunReturnsAtOnce) {
  HttpServer server(HttpServerOptions{}, handlers_with([](HttpRequest&, HttpResponse&) {}));
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  server.run();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

// An idle server stops promptly: nothing busy, nothing open.
TEST(HttpServer, IdleServerStopsPromptly) {
  HttpServer server(HttpServerOptions{}, handlers_with([](HttpRequest&, HttpResponse&) {}));
  std::thread runner([&] { server.run(); });
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}
