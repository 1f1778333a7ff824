#include "serving/job_store.h"

#include <sqlite3.h>
#include <spdlog/spdlog.h>

#include "core/error.h"

namespace vgen::serving {
namespace {

// One prepared statement; binds by 1-based position, finalizes on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw JobStoreError(fmt::format("job database: cannot prepare '{}': {}", sql, sqlite3_errmsg(db)));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& bind(int i, const std::optional<std::string>& v) {
    if (v) return bind(i, *v);
    check(sqlite3_bind_null(stmt_, i));
    return *this;
  }
  // true while a row is available.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw JobStoreError(fmt::format("job database: {}", sqlite3_errmsg(db_)));
  }
  void run() {
    while (step()) {
    }
  }

  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  std::optional<std::string> optional_text(int col) const {
    if (is_null(col)) return std::nullopt;
    return text(col);
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw JobStoreError(fmt::format("job database: {}", sqlite3_errmsg(db_)));
  }
  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, const std::string& path, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string m = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    fail("{}: {}", path, m);
  }
}

constexpr const char* kColumns =
    "id, created_at, completed_at, status, progress, model, prompt, seconds, size, params, error_code, error_message";

VideoJob read_job(const Statement& s) {
  VideoJob j;
  j.id = s.text(0);
  j.created_at = s.int64(1);
  if (!s.is_null(2)) j.completed_at = s.int64(2);
  j.status = s.text(3);
  j.progress = static_cast<int>(s.int64(4));
  j.model = s.text(5);
  j.prompt = s.text(6);
  j.seconds = s.text(7);
  j.size = s.text(8);
  j.params = nlohmann::json::parse(s.text(9), nullptr, /*allow_exceptions=*/false);
  if (j.params.is_discarded()) j.params = nlohmann::json::object();
  j.error_code = s.optional_text(10);
  j.error_message = s.optional_text(11);
  return j;
}

}  // namespace

JobStore::JobStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    fail("{}: cannot open the job database: {}", path, message);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    exec(db_, path_, "PRAGMA journal_mode=WAL");
    exec(db_, path_, "PRAGMA synchronous=NORMAL");
    // seq orders the jobs by creation (ids are random).
    exec(db_, path_,
         "CREATE TABLE IF NOT EXISTS videos ("
         " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
         " id TEXT NOT NULL UNIQUE,"
         " created_at INTEGER NOT NULL,"
         " completed_at INTEGER,"
         " status TEXT NOT NULL,"
         " progress INTEGER NOT NULL DEFAULT 0,"
         " model TEXT NOT NULL,"
         " prompt TEXT NOT NULL,"
         " seconds TEXT NOT NULL,"
         " size TEXT NOT NULL,"
         " params TEXT NOT NULL,"
         " error_code TEXT,"
         " error_message TEXT)");
    Statement s(db_, path_,
                "UPDATE videos SET status = 'failed', error_code = 'server_restarted',"
                " error_message = 'the server stopped before this job finished; submit it again',"
                " completed_at = strftime('%s', 'now')"
                " WHERE status IN ('queued', 'in_progress')");
    s.run();
    interrupted_ = sqlite3_changes(db_);
  } catch (const JobStoreError& e) {
    sqlite3_close(db_);
    fail("{}: {}", path, e.what());
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::before_write(std::string_view operation) {
  if (inject_ && inject_(operation)) throw JobStoreError("job database: database or disk is full (injected)");
  for (auto it = unsaved_failures_.begin(); it != unsaved_failures_.end();) {
    try {
      write_failed(it->first, it->second);
    } catch (const JobStoreError&) {
      return;  // still failing; the write that follows will say so
    }
    spdlog::info("{}: its failure is now stored", it->first);
    it = unsaved_failures_.erase(it);
  }
}

void JobStore::write_failed(const std::string& id, const Failure& f) {
  Statement s(db_, path_,
              "UPDATE videos SET status = 'failed', error_code = ?, error_message = ?, completed_at = ? WHERE id = ?");
  s.bind(1, f.code).bind(2, f.message).bind(3, f.completed_at).bind(4, id).run();
}

void JobStore::overlay(VideoJob& job) const {
  const auto it = unsaved_failures_.find(job.id);
  if (it == unsaved_failures_.end()) return;
  job.status = "failed";
  job.error_code = it->second.code;
  job.error_message = it->second.message;
  job.completed_at = it->second.completed_at;
}

void JobStore::insert(const VideoJob& j) {
  std::lock_guard lock(mutex_);
  before_write("insert");
  Statement s(db_, path_,
              "INSERT INTO videos (id, created_at, completed_at, status, progress, model, prompt, seconds, size,"
              " params, error_code, error_message) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, j.id).bind(2, j.created_at).bind(3, j.status).bind(4, static_cast<int64_t>(j.progress));
  s.bind(5, j.model).bind(6, j.prompt).bind(7, j.seconds).bind(8, j.size).bind(9, j.params.dump());
  s.bind(10, j.error_code).bind(11, j.error_message);
  s.run();
}

std::optional<VideoJob> JobStore::get(const std::string& id) const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, fmt::format("SELECT {} FROM videos WHERE id = ?", kColumns).c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  VideoJob job = read_job(s);
  overlay(job);
  return job;
}

bool JobStore::set_in_progress(const std::string& id) {
  std::lock_guard lock(mutex_);
  before_write("set_in_progress");
  Statement s(db_, path_, "UPDATE videos SET status = 'in_progress', progress = 0 WHERE id = ?");
  s.bind(1, id).run();
  return sqlite3_changes(db_) > 0;
}

bool JobStore::set_progress(const std::string& id, int progress) {
  std::lock_guard lock(mutex_);
  before_write("set_progress");
  Statement s(db_, path_, "UPDATE videos SET progress = ? WHERE id = ?");
  s.bind(1, static_cast<int64_t>(progress)).bind(2, id).run();
  return sqlite3_changes(db_) > 0;
}

bool JobStore::set_completed(const std::string& id, int64_t completed_at) {
  std::lock_guard lock(mutex_);
  before_write("set_completed");
  Statement s(db_, path_, "UPDATE videos SET status = 'completed', progress = 100, completed_at = ? WHERE id = ?");
  s.bind(1, completed_at).bind(2, id).run();
  return sqlite3_changes(db_) > 0;
}

bool JobStore::set_params(const std::string& id, const nlohmann::json& params) {
  std::lock_guard lock(mutex_);
  before_write("set_params");
  Statement s(db_, path_, "UPDATE videos SET params = ? WHERE id = ?");
  s.bind(1, params.dump()).bind(2, id).run();
  return sqlite3_changes(db_) > 0;
}

bool JobStore::set_failed(const std::string& id, const std::string& code, const std::string& message,
                          int64_t completed_at) {
  std::lock_guard lock(mutex_);
  const Failure failure{code, message, completed_at};
  try {
    before_write("set_failed");
    write_failed(id, failure);
    return sqlite3_changes(db_) > 0;
  } catch (const JobStoreError& e) {
    spdlog::error("{}: cannot store its failure yet ({}); kept in memory until a write succeeds", id, e.what());
    unsaved_failures_[id] = failure;
    return true;
  }
}

bool JobStore::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  before_write("remove");
  unsaved_failures_.erase(id);
  Statement s(db_, path_, "DELETE FROM videos WHERE id = ?");
  s.bind(1, id).run();
  return sqlite3_changes(db_) > 0;
}

size_t JobStore::unsaved_failures() const {
  std::lock_guard lock(mutex_);
  return unsaved_failures_.size();
}

void JobStore::inject_write_failures(std::function<bool(std::string_view)> fails) {
  std::lock_guard lock(mutex_);
  inject_ = std::move(fails);
}

std::optional<JobPage> JobStore::list(const std::optional<std::string>& after, int limit, bool descending) const {
  std::lock_guard lock(mutex_);
  std::optional<int64_t> after_seq;
  if (after) {
    Statement s(db_, path_, "SELECT seq FROM videos WHERE id = ?");
    s.bind(1, *after);
    if (!s.step()) return std::nullopt;
    after_seq = s.int64(0);
  }
  const std::string sql =
      fmt::format("SELECT {} FROM videos {} ORDER BY seq {} LIMIT ?", kColumns,
                  after_seq ? (descending ? "WHERE seq < ?" : "WHERE seq > ?") : "", descending ? "DESC" : "ASC");
  Statement s(db_, path_, sql.c_str());
  int i = 1;
  if (after_seq) s.bind(i++, *after_seq);
  s.bind(i, static_cast<int64_t>(limit) + 1);  // one more than asked tells whether there are more
  JobPage page;
  while (s.step()) {
    page.data.push_back(read_job(s));
    overlay(page.data.back());
  }
  if (page.data.size() > static_cast<size_t>(limit)) {
    page.data.pop_back();
    page.has_more = true;
  }
  return page;
}

std::map<std::string, int64_t> JobStore::count_by_status() const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, "SELECT status, COUNT(*) FROM videos GROUP BY status");
  std::map<std::string, int64_t> out;
  while (s.step()) out[s.text(0)] = s.int64(1);
  for (const auto& [id, failure] : unsaved_failures_) {  // counted as stored: move to failed
    Statement q(db_, path_, "SELECT status FROM videos WHERE id = ?");
    q.bind(1, id);
    if (!q.step()) continue;
    --out[q.text(0)];
    ++out["failed"];
  }
  return out;
}

std::vector<std::string> JobStore::ids() const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, "SELECT id FROM videos");
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

}  // namespace vgen::serving
