#include "api/model_path.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

#include "core/error.h"

namespace fs = std::filesystem;

namespace vgen {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

std::string download_hint(const std::string& repo) {
  return fmt::format("download it with `huggingface-cli download {}` (or `hf download {}`) on a machine with "
                     "network access, set HF_HOME or HF_HUB_CACHE to the cache that holds it, or pass the "
                     "checkpoint folder",
                     repo, repo);
}

std::string trimmed_first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

}  // namespace

std::string hugging_face_hub_cache() {
  if (const std::string v = env("HF_HUB_CACHE"); !v.empty()) return v;
  if (const std::string v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;
  if (const std::string v = env("HF_HOME"); !v.empty()) return (fs::path(v) / "hub").string();
  if (const std::string v = env("XDG_CACHE_HOME"); !v.empty()) return (fs::path(v) / "huggingface" / "hub").string();
  return (fs::path(env("HOME")) / ".cache" / "huggingface" / "hub").string();
}

bool looks_like_repo_id(const std::string& text) {
  // huggingface_hub's repo-id rule: [\w.-] names, no leading/trailing '.' or '-', one '/'.
  static const std::regex id(R"(^[A-Za-z0-9_][A-Za-z0-9_.\-]*/[A-Za-z0-9_][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-/]+)?$)");
  return std::regex_match(text, id) && text.find("..") == std::string::npos;
}

std::string resolve_model_path(const std::string& model) {
  std::error_code ec;
  if (fs::exists(model, ec) || !looks_like_repo_id(model)) return model;
  const size_t at = model.find('@');
  const std::string repo = model.substr(0, at);
  const std::string revision = at == std::string::npos ? "main" : model.substr(at + 1);
  const std::string cache = hugging_face_hub_cache();
  std::string folder_name = "models--" + repo;
  folder_name.replace(folder_name.find('/'), 1, "--");
  const fs::path repo_dir = fs::path(cache) / folder_name;
  if (!fs::is_directory(repo_dir, ec))
    fail("model '{}': no such folder, and the repo is not in the Hugging Face cache ({} has no {}); {}", model, cache,
         folder_name, download_hint(repo));

  std::string commit;
  const fs::path ref = repo_dir / "refs" / revision;
  if (fs::is_regular_file(ref, ec)) {
    commit = trimmed_first_line(ref);
  } else if (fs::is_directory(repo_dir / "snapshots" / revision, ec)) {
    commit = revision;  // a commit hash
  } else if (at == std::string::npos) {
    // No refs/main (a cache copied by hand): one snapshot is unambiguous.
    std::vector<std::string> snapshots;
    for (const auto& e : fs::directory_iterator(repo_dir / "snapshots", ec))
      if (e.is_directory()) snapshots.push_back(e.path().filename().string());
    if (snapshots.size() == 1) commit = snapshots[0];
    else
      fail("model '{}': {} has no refs/main and {} snapshots; name one as {}@<commit>", model, repo_dir.string(),
           snapshots.size(), repo);
  } else {
    fail("model '{}': revision '{}' is not in the Hugging Face cache ({} has neither refs/{} nor snapshots/{}); {}",
         model, revision, repo_dir.string(), revision, revision, download_hint(model));
  }
  const fs::path snapshot = repo_dir / "snapshots" / commit;
  if (!fs::is_directory(snapshot, ec))
    fail("model '{}': the cache names commit {} but {} is missing; {}", model, commit, snapshot.string(),
         download_hint(repo));
  if (!fs::exists(snapshot / "model_index.json", ec))
    fail("model '{}': {} has no model_index.json (an incomplete download, or not a diffusers pipeline); {}", model,
         snapshot.string(), download_hint(repo));
  return snapshot.string();
}

}  // namespace vgen
