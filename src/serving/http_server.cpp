// HttpServer: Boost.Beast connections on an Asio io_context, handlers on a thread pool.
#include "serving/http_server.h"

#include <array>
#include <atomic>
#include <mutex>
#include <unordered_set>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "serving/api_error.h"
#include "serving/http_util.h"

namespace vgen::serving {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

// How long a connection is drained (its unread request dropped) after its answer is sent.
constexpr auto kLingerTime = std::chrono::seconds(2);

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void error_response(HttpResponse& res, int status, const std::string& message, const std::optional<std::string>& code) {
  res = HttpResponse();
  send_error(res, ApiError(status, message, std::nullopt, code));
}

}  // namespace

void apply_range(const HttpRequest& req, HttpResponse& res) {
  if (req.method != "GET" || res.status != 200 || !req.has_header("Range")) return;
  const std::string range = req.get_header_value("Range");
  if (range.rfind("bytes=", 0) != 0 || range.find(',') != std::string::npos) return;
  const std::string spec = range.substr(6);
  const size_t dash = spec.find('-');
  if (dash == std::string::npos) return;
  const std::string first = spec.substr(0, dash), last = spec.substr(dash + 1);
  const auto number = [](const std::string& s, uint64_t& v) {
    if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    v = std::stoull(s);
    return true;
  };
  const uint64_t size = res.body.size();
  uint64_t start = 0, end = 0;
  if (first.empty()) {  // the last N bytes
    uint64_t n = 0;
    if (!number(last, n) || n == 0) return;
    start = n >= size ? 0 : size - n;
    end = size == 0 ? 0 : size - 1;
    if (size == 0) start = 1;  // nothing to send: unsatisfiable
  } else {
    if (!number(first, start)) return;
    end = size == 0 ? 0 : size - 1;
    if (!last.empty()) {
      uint64_t e = 0;
      if (!number(last, e) || e < start) return;
      end = std::min(e, end);
    }
  }
  if (start >= size) {
    const std::string type = res.content_type;
    HttpResponse out;
    send_error(out, ApiError(416, fmt::format("range '{}' starts past the end ({} bytes)", printable(range), size),
                             std::nullopt, "range_not_satisfiable"));
    out.set_header("Content-Range", fmt::format("bytes */{}", size));
    res = std::move(out);
    return;
  }
  res.set_header("Content-Range", fmt::format("bytes {}-{}/{}", start, end, size));
  res.body = res.body.substr(start, end - start + 1);
  res.status = 206;
}

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandlers handlers;
  std::atomic<size_t> open_connections{0};
  std::atomic<size_t> busy{0};  // connections past their headers whose answer is not sent yet
  std::atomic<bool> stopped{false};
  net::io_context ioc;
  // Keeps ioc.run() going until stop() ends it. Without it the I/O threads return as soon as
  // nothing is pending on the io_context, which is the case after stop() closes the acceptor
  // while the only requests left are in their handlers (on the pool, nothing of them pending
  // here): their answers, dispatched a moment later, were then never written (issue 20).
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(ioc);
  tcp::acceptor acceptor{ioc};
  net::steady_timer retry_timer{ioc};
  net::thread_pool pool;
  int port = 0;
  // The open connections' sockets, closed by run() once the I/O threads have stopped, so that
  // a client whose request was cut off by stop() sees its connection end rather than hang.
  std::mutex sockets_mutex;
  std::unordered_set<tcp::socket*> sockets;

  Impl(HttpServerOptions o, HttpHandlers h)
      : options(std::move(o)), handlers(std::move(h)), pool(std::max<size_t>(1, options.handler_threads)) {}
  void accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), server_(server), timer_(stream_.get_executor()) {
    ++server_->open_connections;
    {
      std::lock_guard<std::mutex> lock(server_->sockets_mutex);
      server_->sockets.insert(&stream_.socket());
    }
    beast::error_code ec;
    const tcp::endpoint remote = stream_.socket().remote_endpoint(ec);
    if (!ec) req_.remote_addr = remote.address().to_string();
  }
  ~Session() {
    {
      std::lock_guard<std::mutex> lock(server_->sockets_mutex);
      server_->sockets.erase(&stream_.socket());
    }
    if (busy_) --server_->busy;
    --server_->open_connections;
  }

  void start() {
    head_.emplace();
    head_->header_limit(static_cast<std::uint32_t>(server_->options.header_limit));
    head_->body_limit(boost::none);  // the limit is set once the headers are known
    stream_.expires_after(server_->options.header_timeout);
    http::async_read_header(stream_, buffer_, *head_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

 private:
  const HttpServerOptions& options() const { return server_->options; }

  void on_header(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      spdlog::debug("{}: headers not in within {} ms; connection closed", req_.remote_addr,
                    options().header_timeout.count());
      return close();
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted)
      return close();
    begin_request();
    if (ec == http::error::header_limit)
      return refuse(431, fmt::format("the request line and headers are over the limit of {} bytes",
                                     options().header_limit), "headers_too_large");
    if (ec) return refuse(400, fmt::format("malformed HTTP request ({})", ec.message()), "invalid_request");
    const auto& h = head_->get();
    req_.method = std::string(h.method_string());
    req_.target = std::string(h.target());
    for (const auto& field : h) req_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    if (!parse_target(req_.target, req_.path, req_.params))
      return refuse(400, fmt::format("malformed request target '{}'", printable(req_.target)), "invalid_request");
    has_body_ = head_->chunked() || head_->content_length().value_or(0) > 0;
    size_t limit = 0;
    if (server_->handlers.before_body(req_, res_, limit)) {
      // Refused from the headers alone: a small body is drained after the answer.
      drain_ = has_body_ && !head_->chunked() && head_->content_length().value_or(0) <= options().drain_bytes;
      return write_response();
    }
    const bool expects_continue = beast::iequals(h[http::field::expect], "100-continue");
    body_.emplace(std::move(*head_));  // `h` is moved from here on
    body_->body_limit(limit);
    body_limit_ = limit;
    if (!has_body_) return on_body({});
    if (expects_continue) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      stream_.expires_after(options().write_timeout);
      return http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
    }
    read_body();
  }

  // The body deadline is a timer of its own that cancels the read, rather than the stream's
  // expiry, which would close the socket before the 408 is sent.
  void read_body() {
    stream_.expires_never();
    timer_.expires_after(options().body_timeout);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: the body came in time
      self->body_timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
    http::async_read(stream_, buffer_, *body_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->timer_.cancel();
      self->on_body(ec);
    });
  }

  void on_body(beast::error_code ec) {
    if (body_timed_out_) ec = beast::error::timeout;
    if (ec == http::error::body_limit)
      return refuse(413, fmt::format("the request body is over the limit of {} bytes", body_limit_),
                    "request_too_large");
    if (ec == beast::error::timeout)
      return refuse(408, fmt::format("the request body did not arrive within {} s",
                                     options().body_timeout.count() / 1000.0), "request_timeout");
    if (ec)
      return refuse(400, "the request body could not be read (malformed, or the client stopped sending)",
                    "invalid_body");
    if (has_body_) {
      std::string body = std::move(body_->get().body());
      if (req_.is_multipart_form_data()) {
        try {
          req_.parts = parse_multipart(body, req_.get_header_value("Content-Type"));
        } catch (const ApiError& e) {
          send_error(res_, e);
          return write_response();
        }
      } else {
        req_.body = std::move(body);
      }
    }
    body_.reset();
    net::post(server_->pool, [self = shared_from_this()] {
      try {
        self->server_->handlers.handle(self->req_, self->res_);
      } catch (const std::exception& e) {
        error_response(self->res_, 500, fmt::format("internal error: {}", e.what()), "internal_error");
      }
      net::dispatch(self->stream_.get_executor(), [self] { self->write_response(); });
    });
  }

  void begin_request() {
    start_ = std::chrono::steady_clock::now();
    busy_ = true;
    ++server_->busy;
  }

  void refuse(int status, const std::string& message, const std::string& code) {
    error_response(res_, status, message, code);
    write_response();
  }

  void write_response() {
    apply_range(req_, res_);
    auto msg = std::make_shared<http::response<http::string_body>>();
    msg->version(11);
    msg->result(static_cast<unsigned>(res_.status));
    for (const auto& [name, value] : res_.headers) msg->insert(name, value);
    if (!res_.content_type.empty()) msg->set(http::field::content_type, res_.content_type);
    msg->keep_alive(false);
    if (req_.method == "HEAD") {
      msg->content_length(res_.body.size());
    } else {
      msg->body() = std::move(res_.body);
      msg->prepare_payload();
      res_.body.clear();
    }
    stream_.expires_after(options().write_timeout);
    auto sr = std::make_shared<http::response_serializer<http::string_body>>(*msg);
    const auto done = [self = shared_from_this(), msg, sr](beast::error_code ec, size_t) { self->on_write(ec); };
    if (req_.method == "HEAD")
      http::async_write_header(stream_, *sr, done);
    else
      http::async_write(stream_, *sr, done);
  }

  void on_write(beast::error_code ec) {
    if (ec) spdlog::debug("{}: writing the answer failed: {}", req_.remote_addr, ec.message());
    if (server_->handlers.log) server_->handlers.log(req_, res_, ms_since(start_));
    if (busy_) {
      busy_ = false;
      --server_->busy;
    }
    if (ec) return close();
    // Lingering close: no more to send; read what the client still sends (a refused body up
    // to drain_bytes, or nothing) until it closes, so that it sees the answer, not a reset.
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    drain_limit_ = drain_ ? options().drain_bytes : 64u << 10;
    stream_.expires_after(kLingerTime);
    drain();
  }

  void drain() {
    if (drained_ > drain_limit_) return close();
    stream_.async_read_some(net::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->close();
      self->drained_ += n;
      self->drain();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl* server_;  // outlives its sessions: they are destroyed with its io_context and pool
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> head_;
  std::optional<http::request_parser<http::string_body>> body_;
  HttpRequest req_;
  HttpResponse res_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  net::steady_timer timer_;
  bool has_body_ = false, drain_ = false, busy_ = false, body_timed_out_ = false;
  size_t body_limit_ = 0, drained_ = 0, drain_limit_ = 0;
  std::array<char, 16384> scratch_{};
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [self = this](beast::error_code ec, tcp::socket socket) {
    if (self->stopped || ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors (EMFILE) and the like: try again shortly rather than spin.
      spdlog::warn("accepting a connection: {}", ec.message());
      self->retry_timer.expires_after(std::chrono::milliseconds(50));
      self->retry_timer.async_wait([self](beast::error_code e) {
        if (!e) self->accept();
      });
      return;
    }
    if (self->open_connections >= self->options.max_open_connections) {
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      std::make_shared<Session>(std::move(socket), self)->start();
    }
    self->accept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandlers handlers)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handlers))) {
  Impl& s = *impl_;
  const std::string where = fmt::format("{}:{}", s.options.host, s.options.port);
  beast::error_code ec;
  tcp::resolver resolver(s.ioc);
  const auto endpoints = resolver.resolve(s.options.host, std::to_string(s.options.port),
                                          tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) fail("cannot listen on {} (not an address of this host: {})", where, ec.message());
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);  // a quick restart; not SO_REUSEPORT
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(s.options.listen_backlog, ec);
  if (ec) fail("cannot listen on {} ({})", where, ec.message());
  s.port = s.acceptor.local_endpoint().port();
}

HttpServer::~HttpServer() {
  stop();
  impl_->pool.join();
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::run() {
  Impl& s = *impl_;
  if (s.stopped) return;
  net::post(s.ioc, [&s] { s.accept(); });
  std::vector<std::thread> threads;
  for (size_t i = 1; i < s.options.io_threads; ++i) threads.emplace_back([&s] { s.ioc.run(); });
  s.ioc.run();
  for (std::thread& t : threads) t.join();
  std::lock_guard<std::mutex> lock(s.sockets_mutex);
  for (tcp::socket* socket : s.sockets) {
    beast::error_code ignored;
    socket->shutdown(tcp::socket::shutdown_both, ignored);
    socket->close(ignored);
  }
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  net::post(s.ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->retry_timer.cancel();
  });
  // Requests being answered finish (their handlers see the server stopping and answer fast),
  // and connections accepted but still sending their headers get a second to finish them.
  // The io_context runs until here (the work guard): `busy` counts a request from its headers
  // until its answer is written, including while its handler runs on the pool, so a handler
  // that answers during this wait has its answer written and handed to the kernel (a lingering
  // close follows) before ioc.stop() and run()'s closing of the sockets that are left.
  const auto t0 = std::chrono::steady_clock::now();
  while (!s.ioc.stopped()) {
    const auto waited = std::chrono::steady_clock::now() - t0;
    if (waited > std::chrono::seconds(10)) break;
    if (s.busy == 0 && (s.open_connections == 0 || waited > std::chrono::seconds(1))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.work.reset();
  s.ioc.stop();
}

}  // namespace vgen::serving
