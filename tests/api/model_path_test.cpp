// Models by Hugging Face repo id, found in a fake cache laid out as huggingface_hub lays it
// out: <cache>/models--owner--name/{refs/<revision>, snapshots/<commit>/...}.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "api/model_path.h"
#include "api/visual_gen.h"
#include "support/parity.h"

namespace fs = std::filesystem;
using namespace vgen;

namespace {

// Sets an environment variable for one scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

const char* kCommit = "0123456789abcdef0123456789abcdef01234567";
const char* kOlder = "fedcba9876543210fedcba9876543210fedcba98";

// <root>/hub/models--tiny-org--wan-tiny: refs/main -> kCommit (the fixture), refs/v1 -> kOlder
// (an incomplete snapshot: no model_index.json).
fs::path make_fake_cache(const std::string& name) {
  const fs::path root = fs::path(::testing::TempDir()) / name;
  fs::remove_all(root);
  const fs::path repo = root / "hub" / "models--tiny-org--wan-tiny";
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / kOlder);
  fs::copy(vgen::testing::fixture("wan21_t2v_tiny"), repo / "snapshots" / kCommit, fs::copy_options::recursive);
  std::ofstream(repo / "refs" / "main") << kCommit;  // huggingface_hub writes no newline
  std::ofstream(repo / "refs" / "v1") << kOlder << "\n";
  return root;
}

}  // namespace

TEST(ModelPath, FindsTheCacheAsHuggingFaceHubDoes) {
  ScopedEnv a("HF_HUB_CACHE", std::nullopt), b("HUGGINGFACE_HUB_CACHE", std::nullopt), c("HF_HOME", std::nullopt),
      d("XDG_CACHE_HOME", std::nullopt), e("HOME", "/home/u");
  EXPECT_EQ(hugging_face_hub_cache(), "/home/u/.cache/huggingface/hub");
  ScopedEnv f("XDG_CACHE_HOME", "/xdg");
  EXPECT_EQ(hugging_face_hub_cache(), "/xdg/huggingface/hub");
  ScopedEnv g("HF_HOME", "/hf");
  EXPECT_EQ(hugging_face_hub_cache(), "/hf/hub");
  ScopedEnv h("HF_HUB_CACHE", "/cache");
  EXPECT_EQ(hugging_face_hub_cache(), "/cache");
}

TEST(ModelPath, RecognizesRepoIds) {
  EXPECT_TRUE(looks_like_repo_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"));
  EXPECT_TRUE(looks_like_repo_id("org/name@v1.0"));
  EXPECT_FALSE(looks_like_repo_id("/models/Wan2.1"));
  EXPECT_FALSE(looks_like_repo_id("./tiny"));
  EXPECT_FALSE(looks_like_repo_id("a/b/c"));
  EXPECT_FALSE(looks_like_repo_id("tiny"));
}

TEST(ModelPath, ResolvesARepoIdFromAFakeCache) {
  const fs::path root = make_fake_cache("hf_cache_resolve");
  const fs::path repo = root / "hub" / "models--tiny-org--wan-tiny";
  {
    ScopedEnv hub("HF_HUB_CACHE", std::nullopt), home("HF_HOME", root.string());
    EXPECT_EQ(resolve_model_path("tiny-org/wan-tiny"), (repo / "snapshots" / kCommit).string());
    // A commit hash with a snapshot is a revision too.
    EXPECT_EQ(resolve_model_path(std::string("tiny-org/wan-tiny@") + kCommit), (repo / "snapshots" / kCommit).string());
  }
  ScopedEnv hub("HF_HUB_CACHE", (root / "hub").string());
  EXPECT_EQ(resolve_model_path("tiny-org/wan-tiny"), (repo / "snapshots" / kCommit).string());
  // An existing folder, or something that is not a repo id, is left as it is.
  EXPECT_EQ(resolve_model_path(vgen::testing::fixture("wan21_t2v_tiny")), vgen::testing::fixture("wan21_t2v_tiny"));
  EXPECT_EQ(resolve_model_path("/no/such/folder"), "/no/such/folder");

  // The API loads it by id.
  VisualGen gen("tiny-org/wan-tiny", PipelineOptions{});
  EXPECT_EQ(gen.model_path(), (repo / "snapshots" / kCommit).string());
  EXPECT_EQ(gen.pipeline().class_name(), "WanPipeline");
}

TEST(ModelPath, SaysHowToDownloadAMissingRepo) {
  const fs::path root = make_fake_cache("hf_cache_missing");
  ScopedEnv hub("HF_HUB_CACHE", (root / "hub").string());
  const auto message = [](const std::string& model) {
    try {
      resolve_model_path(model);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string absent = message("Wan-AI/Wan2.1-T2V-1.3B-Diffusers");
  EXPECT_NE(absent.find("not in the Hugging Face cache"), std::string::npos) << absent;
  EXPECT_NE(absent.find((root / "hub").string()), std::string::npos) << absent;
  EXPECT_NE(absent.find("huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), std::string::npos) << absent;
  const std::string partial = message("tiny-org/wan-tiny@v1");
  EXPECT_NE(partial.find("no model_index.json"), std::string::npos) << partial;
  const std::string revision = message("tiny-org/wan-tiny@nope");
  EXPECT_NE(revision.find("revision 'nope' is not in the Hugging Face cache"), std::string::npos) << revision;
}
