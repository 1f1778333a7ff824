// Who may call the server and how much they may send: the bearer API key on /v1 routes
// (compared in constant time) and the request body limit, with OpenAI-shaped errors for
// what httplib refuses on its own.
#pragma once

#include <cstddef>
#include <string>

#include <httplib.h>

namespace vgen::serving {

// True when no key is configured, or the request carries "Authorization: Bearer <api_key>".
bool authorized(const httplib::Request& req, const std::string& api_key);

// Bodies above max_body_bytes are a 413; statuses httplib answers itself get an error body.
void limit_requests(httplib::Server& http, size_t max_body_bytes);

}  // namespace vgen::serving
