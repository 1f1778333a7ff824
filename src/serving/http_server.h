// The HTTP/1.1 transport under the router (Boost.Beast on Asio): an asynchronous accept
// loop and connections on a few I/O threads, the handlers on a bounded pool. A connection
// costs a thread only while its handler runs, so clients that send slowly hold none:
//   - the request line and headers must be in within header_timeout of the accept (then
//     the connection is closed), the body within body_timeout (408);
//   - before any body byte is read, before_body() sees the headers and may answer (401,
//     413, 415...); an "Expect: 100-continue" client gets that answer instead of its 100;
//   - the body is read within the limit before_body() gives, whether it comes with a
//     Content-Length or chunked (413 past it); multipart/form-data bodies are parsed into
//     parts (http_message.h);
//   - one request per connection (Connection: close); a refused body is drained up to
//     drain_bytes so that the client reads the answer, a larger one is not read;
//   - the listening socket has SO_REUSEADDR but never SO_REUSEPORT: a second server on the
//     same port fails to bind.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "serving/http_message.h"

namespace vgen::serving {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{120000};
  std::chrono::milliseconds write_timeout{120000};
  size_t handler_threads = 256;  // requests handled at once; more wait for a thread
  size_t max_open_connections = 4096;  // more are closed as soon as they are accepted
  int listen_backlog = 1024;
  size_t header_limit = 16u << 10;  // request line + headers; more is a 431
  size_t drain_bytes = 1u << 20;    // of a refused body, read and dropped
  size_t io_threads = 2;
};

struct HttpHandlers {
  // After the headers, on an I/O thread (must not block): answers `res` and returns true to
  // refuse the request before its body; else sets `body_limit` and returns false.
  std::function<bool(const HttpRequest& req, HttpResponse& res, size_t& body_limit)> before_body;
  // The request with its body, on a handler thread.
  std::function<void(HttpRequest& req, HttpResponse& res)> handle;
  // After the response is sent (or the connection failed): the access log. `req.method` is
  // empty when the request line could not be parsed.
  std::function<void(const HttpRequest& req, const HttpResponse& res, double ms)> log;
};

// A single "Range: bytes=..." on a 200 answer to a GET: 206 with its part and Content-Range,
// or 416 when it starts past the end. Several ranges or an unknown unit: the whole body.
void apply_range(const HttpRequest& req, HttpResponse& res);

class HttpServer {
 public:
  // Binds and listens; throws vgen::Error "cannot listen on HOST:PORT (reason)".
  HttpServer(HttpServerOptions options, HttpHandlers handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // Serves until stop(); returns at once when stop() came first.
  void run();
  // Thread-safe: stops accepting, lets requests being answered finish (up to 10 s: a handler
  // still running gets its answer written) and connections still sending headers finish
  // them (1 s), ends run(), which closes the rest.
  void stop();

  struct Impl;  // shared with the connections of http_server.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vgen::serving
