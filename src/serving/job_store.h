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
#include <functional>
#include <map>
#include <stdexcept>
#include <string_view>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;

namespace vgen::serving {

// A read or write of the job database that failed (disk full, I/O error). Its message names
// neither the file nor its folder: routes may answer it to clients.
class JobStoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

  // Writes throw JobStoreError, except set_failed: a failure it cannot write (disk full) is
  // kept in memory, shown by get() and list(), and written by the next write that succeeds,
  // so that no job stays queued or in progress because the database was full for a while.
  void insert(const VideoJob& job);
  std::optional<VideoJob> get(const std::string& id) const;
  // Each returns false when the job no longer exists (deleted meanwhile).
  bool set_in_progress(const std::string& id);
  bool set_progress(const std::string& id, int progress);
  bool set_completed(const std::string& id, int64_t completed_at);
  // Replaces the job's params (what ran: e.g. the step cache's computed / skipped calls).
  bool set_params(const std::string& id, const nlohmann::json& params);
  bool set_failed(const std::string& id, const std::string& code, const std::string& message, int64_t completed_at);
  bool remove(const std::string& id);

  // Jobs in creation order (descending: newest first), `limit` of them after the job `after`
  // (exclusive). Returns nullopt when `after` names no job.
  std::optional<JobPage> list(const std::optional<std::string>& after, int limit, bool descending) const;
  std::map<std::string, int64_t> count_by_status() const;
  // Ids of every job, for matching media files against jobs at startup.
  std::vector<std::string> ids() const;
  // Failures set_failed could not write yet.
  size_t unsaved_failures() const;

  // Tests: each write asks `fails(operation)` first ("insert", "set_in_progress",
  // "set_progress", "set_completed", "set_params", "set_failed", "remove") and throws JobStoreError when
  // it answers true, as a full disk would. Empty: no injection.
  void inject_write_failures(std::function<bool(std::string_view operation)> fails);

 private:
  struct Failure {
    std::string code, message;
    int64_t completed_at = 0;
  };
  // Under mutex_: throws when an injected failure is due; then writes unsaved failures.
  void before_write(std::string_view operation);
  void write_failed(const std::string& id, const Failure& f);  // throws JobStoreError
  void overlay(VideoJob& job) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  int interrupted_ = 0;
  mutable std::mutex mutex_;
  std::map<std::string, Failure> unsaved_failures_;
  std::function<bool(std::string_view)> inject_;
};

}  // namespace vgen::serving
