// A minimal blocking HTTP/1.1 client for the in-process server tests: one request per
// connection (the server closes it after each answer), the answer read to the end.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vgen::testing {

struct HttpResult {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::string get_header_value(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (std::equal(k.begin(), k.end(), name.begin(), name.end(),
                     [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) ==
                                                 std::tolower(static_cast<unsigned char>(b)); }))
        return v;
    return {};
  }
  bool has_header(const std::string& name) const { return !get_header_value(name).empty(); }
};

// Empty when the connection failed or the answer was not HTTP.
using Result = std::optional<HttpResult>;

class Client {
 public:
  Client(std::string host, int port) : host_(std::move(host)), port_(port) {}
  void set_read_timeout(int seconds) { timeout_s_ = seconds; }
  void set_bearer_token_auth(const std::string& token) { token_ = token; }

  Result Get(const std::string& path, const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return send("GET", path, "", "", headers);
  }
  Result Post(const std::string& path, const std::string& body, const std::string& content_type) {
    return send("POST", path, body, content_type, {});
  }
  // Raw bytes sent as they are (a request the server must refuse); the answer.
  Result raw(const std::string& bytes) { return exchange(bytes); }

  Result send(const std::string& method, const std::string& path, const std::string& body,
              const std::string& content_type, const std::vector<std::pair<std::string, std::string>>& headers) {
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + host_ + ":" + std::to_string(port_) + "\r\n";
    if (!content_type.empty()) req += "Content-Type: " + content_type + "\r\n";
    if (method != "GET" || !body.empty()) req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (!token_.empty()) req += "Authorization: Bearer " + token_ + "\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    req += "Connection: close\r\n\r\n" + body;
    return exchange(req);
  }

 private:
  Result exchange(const std::string& bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return std::nullopt;
    timeval tv{timeout_s_, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    inet_pton(AF_INET, host_.c_str(), &addr.sin_addr);
    std::string in;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      size_t sent = 0;
      while (sent < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      char buf[65536];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) in.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    const size_t head_end = in.find("\r\n\r\n");
    if (in.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return std::nullopt;
    HttpResult r;
    r.status = std::stoi(in.substr(9, 3));
    size_t line = in.find("\r\n") + 2;
    while (line < head_end) {
      const size_t end = in.find("\r\n", line);
      const std::string h = in.substr(line, end - line);
      const size_t colon = h.find(':');
      if (colon != std::string::npos) {
        size_t v = colon + 1;
        while (v < h.size() && h[v] == ' ') ++v;
        r.headers.emplace_back(h.substr(0, colon), h.substr(v));
      }
      line = end + 2;
    }
    r.body = in.substr(head_end + 4);
    return r;
  }

  std::string host_;
  int port_;
  int timeout_s_ = 30;
  std::string token_;
};

}  // namespace vgen::testing
