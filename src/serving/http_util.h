// Small HTTP helpers shared by the routes: JSON and error responses in OpenAI's shape,
// request bodies as fields, query checks, and the text a client may see of its own input.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "serving/http_message.h"
#include <nlohmann/json.hpp>

#include "serving/api_error.h"
#include "serving/requests.h"

namespace vgen::serving {

int64_t unix_now();
double seconds_since(std::chrono::steady_clock::time_point t0);

// Bytes a client sent (prompts, field names) may not be UTF-8; never let dump() throw on them.
std::string dump(const nlohmann::json& j);
std::string base64(const std::vector<uint8_t>& in);
// A client's string quoted in an error message: control bytes become '?', long ones are cut.
std::string printable(const std::string& s);

void send_json(HttpResponse& res, int status, const nlohmann::json& body);
// The error body, plus retry-after for 429/503 and x-should-retry: false for failed generations.
void send_error(HttpResponse& res, const ApiError& e);

// The access log's note of the job a request made or named; read and cleared by the server's
// access log after the handler (both run on the request's handler thread).
void note_job_id(const std::string& id);
std::string take_job_id();

// The body as fields: multipart/form-data parts, else one JSON object.
RequestFields body_fields(const HttpRequest& req);
// 400 naming the first query parameter not in `accepted`.
void reject_unknown_query(const HttpRequest& req, const std::set<std::string>& accepted);

}  // namespace vgen::serving
