// Durable video jobs: one SQLite database (WAL mode) in the media directory.
//
// Every state change is one transaction, so a crash (even kill -9) leaves each job in its
// last committed state. synchronous=NORMAL: in WAL mode a process crash loses nothing
// committed; a power cut may lose the last transactions but never corrupts the file.
// Jobs that were queued or in progress when the previous server process ended cannot be
// resumed (their worker is gone); open() marks them failed with error code
// "server_restarted" so that clients see a final state and can submit them again.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;

namespace vgen::serving {

struct VideoJob {
  std::string id;
  int64_t created_at = 0;  // unix seconds
  std::optional<int64_t> completed_at;
  std::string status = "queued";  // queued | in_progress | completed | failed
  int progress = 0;               // 0-100
  std::string model;
  std::string prompt;
  std::string seconds;  // as the Video object shows it
  std::string size;     // "WxH"
  nlohmann::json params = nlohmann::json::object();  // the generation parameters (VideoPlan::extras)
  std::optional<std::string> error_code;
  std::optional<std::string> error_message;
};

struct JobPage {
  std::vector<VideoJob> data;
  bool has_more = false;
};

class JobStore {
 public:
  // Opens or creates the database file (its folder must exist) and marks the jobs a previous
  // process left unfinished as failed ("server_restarted").
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // How many jobs open() found unfinished and marked failed.
  int interrupted_jobs() const { return interrupted_; }

  void insert(const VideoJob& job);
  std::optional<VideoJob> get(const std::string& id) const;
  // Each returns false when the job no longer exists (deleted meanwhile).
  bool set_in_progress(const std::string& id);
  bool set_progress(const std::string& id, int progress);
  bool set_completed(const std::string& id, int64_t completed_at);
  bool set_failed(const std::string& id, const std::string& code, const std::string& message, int64_t completed_at);
  bool remove(const std::string& id);

  // Jobs in creation order (descending: newest first), `limit` of them after the job `after`
  // (exclusive). Returns nullopt when `after` names no job.
  std::optional<JobPage> list(const std::optional<std::string>& after, int limit, bool descending) const;
  std::map<std::string, int64_t> count_by_status() const;
  // Ids of every job, for matching media files against jobs at startup.
  std::vector<std::string> ids() const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
  int interrupted_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace vgen::serving
