// End-to-end tests of the `vgen` binary on the tiny fixture model: outputs checked with
// ffprobe, bad inputs checked for a non-zero exit and a one-line message naming the problem.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "support/command.h"
#include "support/parity.h"

namespace fs = std::filesystem;
using vgen::testing::fixture;

namespace {

struct Result {
  int code = -1;
  std::string out;  // stdout + stderr
};

// env: "NAME=value " assignments put before the command.
Result run_with_env(const std::string& env, const std::string& args) {
  const std::string cmd = env + std::string(VGEN_BINARY) + " " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

Result run(const std::string& args) { return run_with_env("", args); }

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

// A private copy of the tiny model that a test may break.
fs::path copy_model(const std::string& name) {
  const fs::path dst = fs::path(::testing::TempDir()) / ("cli_" + name);
  fs::remove_all(dst);
  fs::copy(fixture("wan21_t2v_tiny"), dst, fs::copy_options::recursive);
  return dst;
}

nlohmann::json ffprobe(const std::string& path) {
  const auto out = vgen::testing::run_command(
      "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
      "stream=codec_name,pix_fmt,width,height,nb_read_frames,r_frame_rate -of json " + vgen::testing::shell_quote(path));
  EXPECT_TRUE(out.has_value()) << "ffprobe failed on " << path;
  return nlohmann::json::parse(out.value_or("{\"streams\": [{}]}"))["streams"][0];
}

const std::string kQuick = " --prompt 'a red fox in the snow' --steps 2 --seed 7 --quiet ";

}  // namespace

TEST(Cli, GeneratesAnMp4ThatFfprobeAccepts) {
  if (!vgen::testing::have_program("ffprobe")) GTEST_SKIP() << "ffprobe not installed";
  const std::string out = ::testing::TempDir() + "/cli_out.mp4";
  fs::remove(out);
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kQuick +
                       "--height 48 --width 80 --num-frames 9 --fps 12 --output " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json s = ffprobe(out);
  EXPECT_EQ(s["codec_name"], "h264");
  EXPECT_EQ(s["pix_fmt"], "yuv420p");
  EXPECT_EQ(s["width"], 80);
  EXPECT_EQ(s["height"], 48);
  EXPECT_EQ(s["nb_read_frames"], "9");
  EXPECT_EQ(s["r_frame_rate"], "12/1");
}

TEST(Cli, WritesAPngForOneFrame) {
  const std::string out = ::testing::TempDir() + "/cli_out.png";
  fs::remove(out);
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 32 --width 48 --num-frames 1 -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(out, std::ios::binary);
  char sig[8] = {};
  f.read(sig, 8);
  EXPECT_EQ(std::string(sig + 1, 3), "PNG");
}

TEST(Cli, RejectsFramesOffTheGrid) {
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 32 --width 48 --num-frames 80");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(last_line(r.out).find("num_frames must be of the form 4k+1"), std::string::npos) << r.out;
  EXPECT_NE(last_line(r.out).find("80"), std::string::npos) << r.out;
}

TEST(Cli, RejectsSizesOffTheGrid) {
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 40 --width 48 --num-frames 5");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(last_line(r.out).find("height must be a positive multiple of 16 (got 40)"), std::string::npos) << r.out;
}

TEST(Cli, NamesAMissingTensor) {
  const fs::path model = copy_model("missing_tensor");
  const fs::path file = model / "transformer" / "diffusion_pytorch_model.safetensors";
  std::map<std::string, vgen::Tensor> kept;
  {
    const vgen::WeightStore store = vgen::WeightStore::open_files({file.string()});
    for (const std::string& n : store.names())
      if (n != "blocks.0.attn1.to_q.weight") kept[n] = store.get(n).clone();
  }
  vgen::save_safetensors(file.string(), kept);
  const Result r = run("generate --model " + model.string() + kQuick + "--height 32 --width 48 --num-frames 5");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(last_line(r.out).find("missing tensor 'blocks.0.attn1.to_q.weight'"), std::string::npos) << r.out;
}

TEST(Cli, NamesACorruptedHeader) {
  const fs::path model = copy_model("corrupt_header");
  const fs::path file = model / "transformer" / "diffusion_pytorch_model.safetensors";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.write("#garbage#", 9);
  }
  const Result r = run("generate --model " + model.string() + kQuick + "--height 32 --width 48 --num-frames 5");
  EXPECT_NE(r.code, 0);
  const std::string line = last_line(r.out);
  EXPECT_NE(line.find("corrupted safetensors header"), std::string::npos) << r.out;
  EXPECT_NE(line.find("diffusion_pytorch_model.safetensors"), std::string::npos) << r.out;
}

TEST(Cli, NamesAnUnsupportedPipelineClass) {
  const fs::path model = copy_model("bad_class");
  const fs::path index = model / "model_index.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(index));
  j["_class_name"] = "FancyVideoPipeline";
  std::ofstream(index) << j.dump(2);
  const Result r = run("generate --model " + model.string() + kQuick);
  EXPECT_NE(r.code, 0);
  const std::string line = last_line(r.out);
  EXPECT_NE(line.find("unsupported pipeline class 'FancyVideoPipeline'"), std::string::npos) << r.out;
  EXPECT_NE(line.find("WanPipeline"), std::string::npos) << r.out;
}

TEST(Cli, NamesMalformedJson) {
  const fs::path model = copy_model("bad_json");
  std::ofstream(model / "transformer" / "config.json") << "{\"num_layers\": 3,";
  const Result r = run("generate --model " + model.string() + kQuick);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(last_line(r.out).find("transformer/config.json: malformed JSON"), std::string::npos) << r.out;
}

TEST(Cli, InfoDescribesTheCheckpoint) {
  const Result r = run("info " + fixture("wan21_t2v_tiny_b"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("WanPipeline"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BF16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("UniPCMultistepScheduler"), std::string::npos) << r.out;
}

// `vgen info` prints what the pipeline's capabilities() report, so help texts need no family facts.
TEST(Cli, InfoShowsCapabilities) {
  const Result r = run("info " + fixture("wan21_t2v_tiny"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("text-to-video"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("832x480 (WxH), 81 frames, 50 steps, guidance 5.0, 512 prompt tokens, 16 fps"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("height and width multiples of 16, num_frames = 4k+1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("image no, last image no, LoRA yes, two experts no"), std::string::npos) << r.out;
}

// Defaults belong to the model (vgen info), not to the help text of a family-neutral front end.
TEST(Cli, HelpNamesNoModelFamilyNumbers) {
  for (const char* command : {"generate --help", "bench --help", "serve --help"}) {
    const Result r = run(command);
    EXPECT_EQ(r.code, 0) << command << r.out;
    for (const char* fact : {"4k+1", "16 fps", "832", "480", "default 81", "default 50", "Wan"})
      EXPECT_EQ(r.out.find(fact), std::string::npos) << command << " mentions '" << fact << "':\n" << r.out;
  }
}

// `vgen bench` reaches a component through the registry by its config's `_class_name`, from a
// pipeline root or the component's own folder, and says which classes it can bench otherwise.
TEST(Cli, BenchFindsComponentsThroughTheRegistry) {
  const std::string tiny = fixture("wan21_t2v_tiny");
  const std::string size = " --device cpu --height 32 --width 48 --num-frames 5 --text-len 8 --warmup 0 --iters 1";
  for (const std::string& model : {tiny, tiny + "/transformer"}) {
    const Result r = run("bench transformer --model " + model + size);
    ASSERT_EQ(r.code, 0) << r.out;
    // 5 frames -> 2 latent frames; 32x48 -> 4x6 latents -> 2x3 patches of 2x2.
    EXPECT_NE(r.out.find("\"tokens\":12"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"what\":\"vgen_transformer\""), std::string::npos) << r.out;
  }
  const Result wrong = run("bench transformer --model " + tiny + "/vae" + size);
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(last_line(wrong.out).find("no transformer benchmark for class 'AutoencoderKLWan' (supported: "
                                      "WanTransformer3DModel, FluxTransformer2DModel)"),
            std::string::npos)
      << wrong.out;
}

TEST(Cli, UnknownFlagIsAUsageError) {
  const Result r = run("generate --model x --prompt y --bogus-flag 3");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("bogus-flag"), std::string::npos) << r.out;
}

// Range errors say what is wrong in words and name the flag (CLI11's own message printed
// DBL_MAX in full).
TEST(Cli, FlagRangeErrorsNameTheFlagInWords) {
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") + kQuick;
  for (const auto& [flag, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--fps 0", "--fps: must be a positive number, got 0"},
           {"--flow-shift 0", "--flow-shift: must be a positive number, got 0"},
           {"--flow-shift=-1.5", "--flow-shift: must be a positive number, got -1.5"}}) {
    const Result r = run(base + flag);
    EXPECT_NE(r.code, 0) << flag;
    EXPECT_NE(r.out.find(expected), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("179769"), std::string::npos) << r.out;
  }
  const Result port = run("serve --model x --port 70000");
  EXPECT_NE(port.code, 0);
  EXPECT_NE(port.out.find("--port: must be an integer from 0 to 65535, got 70000"), std::string::npos) << port.out;
}

// An unknown attention kernel, from the flag or from VGEN_ATTENTION_BACKEND, fails before the
// model is opened (the model path here does not exist).
TEST(Cli, UnknownAttentionBackendFailsBeforeLoading) {
  const std::string base = "generate --model /no/such/model --prompt x -o out.mp4 ";
  for (const char* what : {"generate", "bench"}) {
    const Result flag = run(std::string(what) == "generate" ? base + "--attention-backend flsh"
                                                            : "bench attention --attention-backend flsh");
    EXPECT_NE(flag.code, 0) << what;
    EXPECT_NE(flag.out.find("--attention-backend"), std::string::npos) << flag.out;
    EXPECT_NE(flag.out.find("flsh"), std::string::npos) << flag.out;
  }
  const Result env = run_with_env("VGEN_ATTENTION_BACKEND=flsh ", base);
  EXPECT_NE(env.code, 0);
  EXPECT_NE(last_line(env.out).find(
                "VGEN_ATTENTION_BACKEND: unknown attention backend 'flsh': expected auto, cudnn, flash, reference or sage"),
            std::string::npos)
      << env.out;
  EXPECT_EQ(env.out.find("/no/such/model"), std::string::npos) << "the model was looked at first:\n" << env.out;
  // A flag overrides the variable, which then does not matter.
  const Result both = run_with_env("VGEN_ATTENTION_BACKEND=flsh ", base + "--attention-backend cudnn");
  EXPECT_NE(both.out.find("/no/such/model"), std::string::npos) << both.out;
  EXPECT_EQ(both.out.find("flsh"), std::string::npos) << both.out;
}

// --seed -1 draws a seed and prints it; passing that seed back repeats the run exactly.
TEST(Cli, SeedMinusOneDrawsAPrintedSeedThatRepeatsTheRun) {
  const std::string a = ::testing::TempDir() + "/cli_seed_a.png", b = ::testing::TempDir() + "/cli_seed_b.png";
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") +
                           " --prompt 'a kite' --steps 2 --quiet --height 32 --width 48 --num-frames 1 ";
  const Result r = run(base + "--seed -1 -o " + a);
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t at = r.out.find("random seed ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string seed = r.out.substr(at + 12, r.out.find('\n', at) - at - 12);
  ASSERT_FALSE(seed.empty());
  const Result again = run(base + "--seed " + seed + " -o " + b);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(vgen::media::read_file(a), vgen::media::read_file(b)) << "seed " << seed;
}

// Seeds beyond 2^64-1 or below -1 are errors, not clamped.
TEST(Cli, SeedsOutOfRangeAreErrors) {
  for (const char* seed : {"18446744073709551616", "-2", "12abc", "1e3"}) {
    const Result r = run("generate --model " + fixture("wan21_t2v_tiny") + " --prompt x --seed " + seed);
    EXPECT_NE(r.code, 0) << seed;
    EXPECT_NE(last_line(r.out).find("--seed: must be an integer from 0 to 18446744073709551615"), std::string::npos)
        << r.out;
    EXPECT_NE(last_line(r.out).find(seed), std::string::npos) << r.out;
  }
  // The largest seed is accepted.
  const Result max = run("generate --model " + fixture("wan21_t2v_tiny") +
                         " --prompt x --steps 1 --quiet --seed 18446744073709551615 --height 32 --width 48 --num-frames 1 -o " +
                         ::testing::TempDir() + "/cli_seed_max.png");
  EXPECT_EQ(max.code, 0) << max.out;
}

TEST(Cli, SuggestsTheClosestCommandAndFlag) {
  const Result cmd = run("generat --model x --prompt y");
  EXPECT_NE(cmd.code, 0);
  EXPECT_NE(cmd.out.find("unknown command 'generat'; did you mean 'generate'?"), std::string::npos) << cmd.out;
  const Result flag = run("generate --model x --promt y");
  EXPECT_NE(flag.code, 0);
  EXPECT_NE(flag.out.find("unknown flag --promt: did you mean --prompt?"), std::string::npos) << flag.out;
}

// The output path is checked before the model is even opened, and the message names the
// path the user gave (not a temporary file).
TEST(Cli, ChecksTheOutputFolderBeforeAnyWork) {
  const std::string out = ::testing::TempDir() + "/no_such_folder/x.mp4";
  const Result r = run("generate --model /no/such/model --prompt x -o " + out);
  EXPECT_NE(r.code, 0);
  const std::string line = last_line(r.out);
  EXPECT_NE(line.find("--output " + out + ": the folder"), std::string::npos) << r.out;
  EXPECT_NE(line.find("does not exist"), std::string::npos) << r.out;
  EXPECT_EQ(line.find(".tmp"), std::string::npos) << r.out;
  const Result ext = run("generate --model /no/such/model --prompt x -o out.avi");
  EXPECT_NE(last_line(ext.out).find("--output out.avi: unsupported extension '.avi'"), std::string::npos) << ext.out;
#ifndef VGEN_WITH_LIBAV
  // Without FFmpeg's libraries MP4s go through an ffmpeg program: a missing one is found here,
  // not after the generation.
  const Result mp4 = run_with_env("VGEN_FFMPEG=/no/such/ffmpeg ", "generate --model /no/such/model --prompt x -o out.mp4");
  EXPECT_NE(last_line(mp4.out).find("--output out.mp4: no program '/no/such/ffmpeg' found"), std::string::npos)
      << mp4.out;
#endif
}

// Every phase says when it starts and how long it took; denoising steps carry an ETA.
TEST(Cli, ReportsEveryPhaseWithAnEta) {
  if (const std::string why = vgen::media::mp4_writer_problem(); !why.empty()) GTEST_SKIP() << why;
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") +
                       " --prompt 'a fox' --steps 2 --seed 1 --height 32 --width 48 --num-frames 5 -o " +
                       ::testing::TempDir() + "/cli_phases.mp4");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* line : {"[1/5] loading", "[2/5] encoding the prompt: done in", "[3/5] denoising: step 1/2",
                           "s/step, eta ", "[3/5] denoising: step 2/2", "[4/5] decoding (VAE): done in",
                           "[5/5] writing", "timing: load"})
    EXPECT_NE(r.out.find(line), std::string::npos) << "no '" << line << "' in:\n" << r.out;
}

// The phases other than denoising get an ETA from the rates the previous run measured (kept in
// the file VGEN_PHASE_RATES names): a second run estimates loading, encoding, decoding, writing.
TEST(Cli, EstimatesEveryPhaseFromThePreviousRun) {
  const std::string rates = ::testing::TempDir() + "/cli_phase_rates.json";
  fs::remove(rates);
  const std::string cmd = "generate --model " + fixture("wan21_t2v_tiny") +
                          " --prompt 'a fox' --steps 1 --seed 1 --height 32 --width 48 --num-frames 1 -o " +
                          ::testing::TempDir() + "/cli_eta.png";
  const Result first = run_with_env("VGEN_PHASE_RATES=" + rates + " ", cmd);
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_EQ(first.out.find("(about "), std::string::npos) << "nothing measured yet:\n" << first.out;
  ASSERT_TRUE(fs::exists(rates));
  const Result second = run_with_env("VGEN_PHASE_RATES=" + rates + " ", cmd);
  ASSERT_EQ(second.code, 0) << second.out;
  for (const char* phase : {"[1/5] loading", "[2/5] encoding the prompt", "[4/5] decoding (VAE)", "[5/5] writing"}) {
    const size_t at = second.out.find(std::string(phase));
    ASSERT_NE(at, std::string::npos) << phase << " in:\n" << second.out;
    const std::string line = second.out.substr(at, second.out.find('\n', at) - at);
    EXPECT_NE(line.find("... (about "), std::string::npos) << line;
  }
  fs::remove(rates);
}

// A prompt longer than --max-sequence-length is cut as diffusers cuts it, with a warning
// (even with --quiet).
TEST(Cli, WarnsWhenThePromptIsTruncated) {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "a red fox ";
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") +
                           " --steps 1 --seed 1 --quiet --guidance-scale 1 --height 32 --width 48 --num-frames 1 "
                           "--max-sequence-length 16 -o " + ::testing::TempDir() + "/cli_trunc.png --prompt ";
  const Result r = run(base + "'" + prompt + "'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("warning: the prompt is "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("only the first 16 are used"), std::string::npos) << r.out;
  const Result short_prompt = run(base + "'a fox'");
  ASSERT_EQ(short_prompt.code, 0) << short_prompt.out;
  EXPECT_EQ(short_prompt.out.find("warning"), std::string::npos) << short_prompt.out;
}

// `vgen info` and `vgen generate` take a Hugging Face repo id found in HF_HUB_CACHE.
TEST(Cli, TakesAHuggingFaceRepoIdFromTheCache) {
  const fs::path hub = fs::path(::testing::TempDir()) / "cli_hf_cache" / "hub";
  fs::remove_all(hub.parent_path());
  const fs::path repo = hub / "models--tiny-org--wan-tiny";
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots");
  fs::copy(fixture("wan21_t2v_tiny"), repo / "snapshots" / "abc123", fs::copy_options::recursive);
  std::ofstream(repo / "refs" / "main") << "abc123";
  const std::string env = "HF_HUB_CACHE=" + vgen::testing::shell_quote(hub.string()) + " ";
  const Result info = run_with_env(env, "info tiny-org/wan-tiny");
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find("WanPipeline"), std::string::npos) << info.out;
  const Result gen = run_with_env(env, "generate --model tiny-org/wan-tiny" + kQuick +
                                           "--height 32 --width 48 --num-frames 1 -o " + ::testing::TempDir() +
                                           "/cli_hf.png");
  EXPECT_EQ(gen.code, 0) << gen.out;
  const Result missing = run_with_env(env, "info Wan-AI/Wan2.1-T2V-1.3B-Diffusers");
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(last_line(missing.out).find("huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), std::string::npos)
      << missing.out;
}

// Lossless outputs: a folder or a %04d.png pattern gets one PNG per frame, each carrying the
// generation metadata that `vgen info FILE` prints back.
TEST(Cli, WritesAnnotatedPngFramesThatInfoReadsBack) {
  const fs::path dir = fs::path(::testing::TempDir()) / "cli_frames";
  fs::remove_all(dir);
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") +
                           " --prompt 'a fox, ünïcode' --steps 2 --seed 9 --quiet --height 32 --width 48 --num-frames 5 ";
  const Result folder = run(base + "-o " + dir.string() + "/");
  ASSERT_EQ(folder.code, 0) << folder.out;
  for (const char* f : {"0000.png", "0001.png", "0002.png", "0003.png", "0004.png"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  EXPECT_FALSE(fs::exists(dir / "0005.png"));
  const Result pattern = run(base + "-o " + dir.string() + "/f_%03d.png");
  ASSERT_EQ(pattern.code, 0) << pattern.out;
  EXPECT_TRUE(fs::exists(dir / "f_004.png"));
  // The frames are the MP4's source, losslessly: identical runs give identical files.
  EXPECT_EQ(vgen::media::read_file((dir / "0004.png").string()), vgen::media::read_file((dir / "f_004.png").string()));

  const Result info = run("info " + (dir / "0002.png").string());
  ASSERT_EQ(info.code, 0) << info.out;
  for (const std::string& line : std::vector<std::string>{"prompt               a fox, ünïcode", "seed                 9",
                                 "num_inference_steps  2", "guidance_scale       5",
                                 "model                " + fixture("wan21_t2v_tiny"), "software             vgen ",
                                 "frame                2"})
    EXPECT_NE(info.out.find(line), std::string::npos) << "no '" << line << "' in:\n" << info.out;

  const Result bad = run(base + "-o " + dir.string() + "/f_%d_%d.png");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(last_line(bad.out).find("a frame pattern is a .png file name with one %d"), std::string::npos) << bad.out;
}

// --crf and --preset reach libx264 and the MP4 carries the metadata too.
TEST(Cli, Mp4QualityFlagsAndMetadata) {
  if (!vgen::testing::have_program("ffprobe")) GTEST_SKIP() << "ffprobe not installed";
  const std::string best = ::testing::TempDir() + "/cli_crf0.mp4", worst = ::testing::TempDir() + "/cli_crf51.mp4";
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 48 --width 80 --num-frames 9 ";
  const Result a = run(base + "--crf 0 --preset ultrafast -o " + best);
  ASSERT_EQ(a.code, 0) << a.out;
  const Result b = run(base + "--crf 51 -o " + worst);
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_GT(fs::file_size(best), 2 * fs::file_size(worst));
  EXPECT_EQ(ffprobe(best)["nb_read_frames"], "9");
  const Result info = run("info " + best);
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find("prompt               a red fox in the snow"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("seed                 7"), std::string::npos) << info.out;
  const Result range = run(base + "--crf 52 -o " + best);
  EXPECT_NE(range.code, 0);
  EXPECT_NE(range.out.find("--crf: must be an integer from 0 to 51, got 52"), std::string::npos) << range.out;
}

// Several prompts (--prompt repeated, --prompts-file) and --num-videos-per-prompt: video k gets
// seed + k and out_<k>.<ext>, each the same as a run of its own with that prompt and seed.
TEST(Cli, BatchesPromptsAndVideosPerPrompt) {
  const fs::path dir = fs::path(::testing::TempDir()) / "cli_batch";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") +
                           " --steps 2 --quiet --height 32 --width 48 --num-frames 1 ";
  const Result r = run(base + "--prompt 'a fox' --prompt 'a kite' --num-videos-per-prompt 2 --seed 5 -o " +
                       (dir / "out.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"a fox", "5"}, {"a fox", "6"}, {"a kite", "7"}, {"a kite", "8"}};
  for (size_t k = 0; k < expected.size(); ++k) {
    const std::string file = (dir / fmt::format("out_{:03d}.png", k)).string();
    ASSERT_TRUE(fs::exists(file)) << file << "\n" << r.out;
    EXPECT_NE(r.out.find(file), std::string::npos) << "stdout lists " << file;
    const Result info = run("info " + file);
    EXPECT_NE(info.out.find("prompt               " + expected[k].first + "\n"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("seed                 " + expected[k].second + "\n"), std::string::npos) << info.out;
  }
  EXPECT_FALSE(fs::exists(dir / "out_004.png"));
  const Result single = run(base + "--prompt 'a kite' --seed 8 -o " + (dir / "single.png").string());
  ASSERT_EQ(single.code, 0) << single.out;
  EXPECT_EQ(vgen::media::read_file((dir / "single.png").string()), vgen::media::read_file((dir / "out_003.png").string()));

  // --batch-size 3: the same videos, the first three through the transformer together.
  const Result batched = run(base + "--prompt 'a fox' --prompt 'a kite' --num-videos-per-prompt 2 --seed 5 --batch-size 3 -o " +
                             (dir / "b.png").string());
  ASSERT_EQ(batched.code, 0) << batched.out;
  for (size_t k = 0; k < expected.size(); ++k) {
    const Result info = run("info " + (dir / fmt::format("b_{:03d}.png", k)).string());
    EXPECT_NE(info.out.find("prompt               " + expected[k].first + "\n"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("seed                 " + expected[k].second + "\n"), std::string::npos) << info.out;
  }

  std::ofstream(dir / "prompts.txt") << "a red fox\n\n  \na blue kite\r\n";
  const Result file = run(base + "--prompts-file " + (dir / "prompts.txt").string() + " -o " + (dir / "f.png").string());
  ASSERT_EQ(file.code, 0) << file.out;
  EXPECT_TRUE(fs::exists(dir / "f_000.png"));
  EXPECT_TRUE(fs::exists(dir / "f_001.png"));
  EXPECT_FALSE(fs::exists(dir / "f_002.png"));
  EXPECT_NE(run("info " + (dir / "f_001.png").string()).out.find("prompt               a blue kite\n"), std::string::npos);

  std::ofstream(dir / "empty.txt") << "\n\n";
  const Result empty = run(base + "--prompts-file " + (dir / "empty.txt").string());
  EXPECT_NE(empty.code, 0);
  EXPECT_NE(last_line(empty.out).find("no prompts in it"), std::string::npos) << empty.out;
  // An unquoted prompt is a usage error, not two prompts.
  const Result unquoted = run("generate --model " + fixture("wan21_t2v_tiny") + " --prompt a cat");
  EXPECT_NE(unquoted.code, 0);
  EXPECT_NE(unquoted.out.find("not expected: cat"), std::string::npos) << unquoted.out;
  const Result none = run("generate --model " + fixture("wan21_t2v_tiny"));
  EXPECT_NE(none.code, 0);
  EXPECT_NE(last_line(none.out).find("no prompt: give --prompt"), std::string::npos) << none.out;
}

// Image-to-video from the command line: the first frame from a file, PNG frames out (a build
// without FFmpeg's libraries writes those too); an image to a text-only model and a file that
// does not decode are refused naming what is wrong (the latter before the model loads).
TEST(Cli, GeneratesFromAnImage) {
  const std::string out = ::testing::TempDir() + "/cli_i2v_frames/";
  fs::remove_all(out);
  const std::string image = fixture("wan21_i2v_tiny_ref/image_a.png");
  const Result r = run("generate --model " + fixture("wan21_i2v_tiny") + kQuick + "--image " + image +
                       " --height 32 --width 48 --num-frames 5 -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(out + "0000.png") && fs::exists(out + "0004.png")) << r.out;
  const Result info = run("info " + out + "0000.png");
  EXPECT_NE(info.out.find("given (37x29)"), std::string::npos) << info.out;  // the image is in the metadata

  const Result t2v = run("generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--image " + image +
                         " --height 32 --width 48 --num-frames 5 -o " + out);
  EXPECT_NE(t2v.code, 0);
  EXPECT_NE(last_line(t2v.out).find("image: this model (WanPipeline) takes no image"), std::string::npos) << t2v.out;

  const std::string bad = ::testing::TempDir() + "/cli_not_an_image.png";
  std::ofstream(bad) << "not an image";
  const Result garbage = run("generate --model " + fixture("wan21_i2v_tiny") + kQuick + "--image " + bad + " -o " + out);
  EXPECT_NE(garbage.code, 0);
  EXPECT_NE(last_line(garbage.out).find(bad), std::string::npos) << garbage.out;
  EXPECT_EQ(garbage.out.find("loading"), std::string::npos) << "refused before loading:\n" << garbage.out;

  const Result missing = run("generate --model " + fixture("wan21_i2v_tiny") + kQuick + "--height 32 --width 48 -o " + out);
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(last_line(missing.out).find("generates from an image: give the first frame"), std::string::npos)
      << missing.out;
}

TEST(Cli, InfoSaysWhichInputsAModelTakes) {
  const Result i2v = run("info " + fixture("wan21_flf2v_tiny"));
  ASSERT_EQ(i2v.code, 0) << i2v.out;
  EXPECT_NE(i2v.out.find("image-to-video, first-last-frame-to-video"), std::string::npos) << i2v.out;
  EXPECT_NE(i2v.out.find("image required, last image required"), std::string::npos) << i2v.out;
  const Result a14b = run("info " + fixture("wan22_t2v_tiny"));
  ASSERT_EQ(a14b.code, 0) << a14b.out;
  EXPECT_NE(a14b.out.find("guidance 4.0 / 3.0 (high / low noise)"), std::string::npos) << a14b.out;
  EXPECT_NE(a14b.out.find("two experts yes"), std::string::npos) << a14b.out;
}

// The distilled recipe's flags: an explicit schedule sets the steps, is recorded in the
// output's metadata, and bad lists fail naming the flag (parse) or the parameter (resolve).
TEST(Cli, TakesExplicitTimestepsAndSigmas) {
  const std::string model = fixture("wan21_t2v_tiny");
  const std::string base = "generate --model " + model + " --prompt 'a fox' --seed 3 --quiet --height 32 --width 48 "
                           "--num-frames 1 --guidance-scale 1 ";
  const std::string png = ::testing::TempDir() + "/cli_timesteps.png";
  fs::remove(png);
  const Result ok = run(base + "--scheduler FlowMatchEulerDiscreteScheduler --flow-shift 5 "
                               "--timesteps 1000,750,500,250 -o " + png);
  ASSERT_EQ(ok.code, 0) << ok.out;
  const Result info = run("info " + png);
  ASSERT_EQ(info.code, 0) << info.out;
  for (const std::string line : {"num_inference_steps  4", "timesteps            1000,750,500,250"})
    EXPECT_NE(info.out.find(line), std::string::npos) << "no '" << line << "' in:\n" << info.out;

  // The checkpoint's UniPC takes sigmas.
  const Result sig = run(base + "--sigmas 1,0.75,0.5 -o " + png);
  ASSERT_EQ(sig.code, 0) << sig.out;
  const Result sig_info = run("info " + png);
  EXPECT_NE(sig_info.out.find("sigmas               1,0.75,0.5"), std::string::npos) << sig_info.out;
  EXPECT_NE(sig_info.out.find("num_inference_steps  3"), std::string::npos) << sig_info.out;

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--timesteps 1000,,250", "--timesteps: expected comma-separated numbers (e.g. 1000,750,500,250), got '1000,,250'"},
      {"--sigmas 1,abc", "--sigmas: expected comma-separated numbers"},
      {"--timesteps 1000,750", "timesteps: the UniPCMultistepScheduler scheduler takes no timesteps"},
      {"--scheduler FlowMatchEulerDiscreteScheduler --timesteps 250,500", "timesteps must be strictly decreasing"},
      {"--scheduler FlowMatchEulerDiscreteScheduler --timesteps 1000,500 --steps 4",
       "num_inference_steps is 4, but the timesteps given have 2 values"},
      {"--sigmas 1,0.5 --boundary-step 1", "boundary_step applies to two-expert models"},
  };
  for (const auto& [flags, message] : bad) {
    const Result r = run(base + flags + " -o " + png);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_NE(last_line(r.out).find(message), std::string::npos) << flags << "\n" << r.out;
  }
  const Result range = run(base + "--boundary-step -1 -o " + png);  // CLI11 adds a --help line
  EXPECT_NE(range.code, 0);
  EXPECT_NE(range.out.find("--boundary-step: must be an integer from 0 to 1000, got -1"), std::string::npos) << range.out;
}

// Wan2.2 A14B's switch by step index: vgen generate says where the low-noise expert took over.
TEST(Cli, BoundaryStepMovesTheExpertSwitch) {
  const Result r = run_with_env("", "generate --model " + fixture("wan22_t2v_tiny") +
                                        " --prompt 'a fox' --seed 3 --height 32 --width 48 --num-frames 1 "
                                        "--guidance-scale 1 --scheduler FlowMatchEulerDiscreteScheduler --flow-shift 5 "
                                        "--timesteps 1000,750,500,250 --boundary-step 2 -o " +
                                        ::testing::TempDir() + "/cli_boundary.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step 3: the low-noise expert (transformer_2) took over"), std::string::npos) << r.out;
}

// --lora FILE[:SCALE] fuses the adapter (a different video than without), is recorded in the
// metadata, and a bad adapter fails before the model loads, naming the file.
TEST(Cli, LoraAdaptersAreFusedAndRecorded) {
  const fs::path dir = fs::path(::testing::TempDir()) / "cli_lora";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 32 --width 48 --num-frames 1 ";
  const std::string lora = fixture("lora_ref/t2v_wan.safetensors");
  const Result plain = run(base + "-o " + (dir / "plain.png").string());
  ASSERT_EQ(plain.code, 0) << plain.out;
  const Result with = run(base + "--lora " + lora + ":0.8 -o " + (dir / "lora.png").string());
  ASSERT_EQ(with.code, 0) << with.out;
  EXPECT_NE(vgen::media::read_file((dir / "plain.png").string()), vgen::media::read_file((dir / "lora.png").string()));
  const Result info = run("info " + (dir / "lora.png").string());
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find(lora + " (scale 0.8)"), std::string::npos) << info.out;

  const Result missing = run(base + "--lora " + (dir / "nope.safetensors").string());
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(last_line(missing.out).find("--lora " + (dir / "nope.safetensors").string() + ": no such file"),
            std::string::npos) << missing.out;
  const Result scale = run(base + "--lora " + lora + ":big");
  EXPECT_NE(scale.code, 0);
  EXPECT_NE(last_line(scale.out).find("must be a number"), std::string::npos) << scale.out;
  // A Wan2.2 expert's adapter on a one-expert model.
  const Result second = run(base + "--lora-2 " + fixture("lora_ref/wan22_low_wan.safetensors"));
  EXPECT_NE(second.code, 0);
  EXPECT_NE(last_line(second.out).find("need a two-expert model"), std::string::npos) << second.out;
  // An I2V adapter (k_img / v_img) on the T2V model: its image projections match nothing.
  const Result unmatched = run(base + "--lora " + fixture("lora_ref/i2v_musubi.safetensors"));
  EXPECT_NE(unmatched.code, 0);
  EXPECT_NE(last_line(unmatched.out).find("match no weight of WanTransformer3DModel"), std::string::npos) << unmatched.out;
  const Result ignored = run(base + "--lora " + fixture("lora_ref/i2v_musubi.safetensors") +
                             " --lora-ignore-unmatched -o " + (dir / "ignored.png").string());
  EXPECT_EQ(ignored.code, 0) << ignored.out;
}

// Quantization flags: `vgen info` counts the transformer's linear layers per format, generate
// runs quantized, and bad or conflicting flags are errors naming them.
TEST(Cli, QuantizationFlags) {
  Result r = run("info " + fixture("wan21_t2v_tiny") + " --quant-algo FP8 --no-quant-fast-accum --quant-ignore proj_out");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("transformer: 1 F32, 2 F32 (kept in float32), 33 fp8 per-tensor (quantized while loading)"),
            std::string::npos)
      << r.out;
  for (const char* fast : {"", " --quant-fast-accum"}) {  // fast accumulation is the FP8 default
    r = run("info " + fixture("wan21_t2v_tiny") + " --quant-algo FP8" + fast + " --quant-ignore proj_out");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("33 fp8 per-tensor, fast accumulation (quantized while loading)"), std::string::npos) << r.out;
  }
  r = run("info " + fixture("wan21_t2v_tiny"));
  EXPECT_NE(r.out.find("transformer: 34 F32, 2 F32 (kept in float32)"), std::string::npos) << r.out;

  const std::string out = ::testing::TempDir() + "/cli_quant.png";
  fs::remove(out);
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") + kQuick + "--height 32 --width 48 --num-frames 1 ";
  for (const char* flags : {"--quant-algo NVFP4", "--linear-type trtllm-fp8-blockwise"}) {
    r = run(base + flags + " -o " + out);
    EXPECT_EQ(r.code, 0) << flags << r.out;
    EXPECT_TRUE(fs::exists(out)) << flags;
    fs::remove(out);
  }
  r = run(base + "--quant-algo int4 -o " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--quant-algo: 'int4' is not one of: none, FP8, FP8_BLOCK_SCALES, NVFP4"), std::string::npos) << r.out;
  r = run(base + "--quant-algo FP8 --linear-type trtllm-nvfp4 -o " + out);
  EXPECT_NE(r.out.find("--quant-algo and --linear-type name the same setting"), std::string::npos) << r.out;
  r = run(base + "--quant-static -o " + out);
  EXPECT_NE(r.out.find("--quant-static needs --quant-algo"), std::string::npos) << r.out;
  for (const char* flags : {"--quant-fast-accum", "--quant-algo NVFP4 --quant-fast-accum", "--no-quant-fast-accum"}) {
    r = run(base + flags + " -o " + out);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_NE(r.out.find("quant-fast-accum needs --quant-algo FP8 or FP8_BLOCK_SCALES"), std::string::npos) << r.out;
  }
  r = run(base + "--quant-algo FP8 --quant-fast-accum --no-quant-fast-accum -o " + out);
  EXPECT_NE(r.out.find("--quant-fast-accum and --no-quant-fast-accum: give one of them"), std::string::npos) << r.out;
  // A bf16/fp32 checkpoint read as a static one: the tensor and the dtype it should have.
  r = run(base + "--quant-algo FP8 --quant-static -o " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find(".weight: expected F8_E4M3"), std::string::npos) << r.out;
}

// --quant-fast-accum and --no-gemm-autotune reach the pipeline's options (the bench JSON reports
// them); on the CPU neither changes a value: the same image with and without (on a GPU both may
// change the last bits, so the generations run on the CPU).
TEST(Cli, FastAccumulationAndGemmAutotuneFlags) {
  const std::string tiny = fixture("wan21_t2v_tiny");
  const std::string size = " --device cpu --height 32 --width 48 --num-frames 5 --text-len 8 --warmup 0 --iters 1";
  Result r = run("bench transformer --model " + tiny + size + " --quant-algo FP8 --quant-fast-accum --no-gemm-autotune");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"quant_fast_accum\":true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"gemm_autotune\":false"), std::string::npos) << r.out;
  r = run("bench transformer --model " + tiny + size + " --quant-algo FP8 --no-quant-fast-accum");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"quant_fast_accum\":false"), std::string::npos) << r.out;
  r = run("bench transformer --model " + tiny + size + " --quant-algo NVFP4");  // the default applies to FP8 only
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"quant_fast_accum\":false"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"gemm_autotune\":true"), std::string::npos) << r.out;

  const fs::path dir = fs::path(::testing::TempDir()) / "cli_fast_accum";
  fs::create_directories(dir);
  const std::string base =
      "generate --model " + tiny + kQuick + "--device cpu --height 32 --width 48 --num-frames 1 --quant-algo FP8 ";
  r = run(base + "--no-quant-fast-accum -o " + (dir / "plain.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(base + "--quant-fast-accum --no-gemm-autotune -o " + (dir / "fast.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(vgen::media::read_file((dir / "plain.png").string()), vgen::media::read_file((dir / "fast.png").string()));
}

// TaylorSeer through the --cache-* flags: its skipped calls in the summary line, its flags
// refused with another backend, its field problems named by flag.
TEST(Cli, TaylorSeerCacheFlags) {
  const std::string base = "generate --model " + fixture("wan21_t2v_tiny") +
                            " --prompt 'a fox' --steps 5 --seed 1 --height 32 --width 48 --num-frames 1 -o " +
                           (fs::path(::testing::TempDir()) / "cli_taylorseer.png").string() + " ";
  // 5 steps: calls 0, 1 computed, then every 3rd from call 3: 0, 1, 3 computed per branch.
  Result r = run(base + "--cache-backend taylorseer --cache-lite-mode true --cache-interval 3 --cache-disable-before 2");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("cache: taylorseer: skipped 4/10 transformer calls (cond 2/5, uncond 2/5)"), std::string::npos)
      << r.out;
  for (const auto& [flags, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--cache-backend fbcache --cache-interval 3", "--cache-interval: applies to --cache-backend taylorseer only"},
           {"--cache-backend fbcache --cache-use-ret-steps false",
            "--cache-use-ret-steps: applies to --cache-backend teacache only"},
           {"--cache-backend teacache --cache-retention-ratio 0.3",
            "--cache-retention-ratio: applies to --cache-backend magcache only"},
           {"--cache-backend fbcache --cache-max-skip-steps 2",
            "--cache-max-skip-steps: applies to --cache-backend magcache only"},
           {"--cache-backend none --cache-threshold 0.3", "have no effect with --cache-backend none"},
           {"--cache-backend taylorseer --cache-threshold 0.1", "--cache-threshold: does not apply to cache_backend taylorseer"},
           {"--cache-backend taylorseer --cache-factors-dtype fp8", "--cache-factors-dtype: 'fp8' is not one of"},
           {"--cache-backend taylorseer --cache-max-order 9", "--cache-max-order: must be in [0, 8], got 9"},
           {"--cache-backend taylorseer --cache-disable-before 0", "--cache-disable-before: must be at least 1"}}) {
    r = run(base + flags);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_NE(r.out.find(expected), std::string::npos) << r.out;
  }
}

// With --latents the header names the file as the noise, not seeds that draw nothing.
TEST(Cli, HeaderNamesTheLatentsFile) {
  const std::string latents = fixture("wan21_t2v_tiny_ref/pipeline.safetensors");
  const fs::path dir = fs::path(::testing::TempDir()) / "cli_latents_frames";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Result r = run("generate --model " + fixture("wan21_t2v_tiny") +
                       " --prompt 'a fox' --prompt 'a kite' --steps 1 --height 32 --width 48 --num-frames 9 --latents " +
                       latents + " -o " + (dir / "%04d.png").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("latents from " + latents + "; 2 videos"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("seeds"), std::string::npos) << r.out;
}

// --vae-chunk-frames reaches the video VAE (the bench says what ran); an image model's VAE and
// a count below 1 are refused, naming the option.
TEST(Cli, VaeChunkFramesReachesTheVideoVae) {
  const std::string size = " --device cpu --height 32 --width 48 --num-frames 9 --warmup 0 --iters 1";
  const Result r = run("bench vae --model " + fixture("wan21_t2v_tiny") + size + " --vae-chunk-frames 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"vae_chunk_frames\":2"), std::string::npos) << r.out;
  const Result image = run("bench vae --model " + fixture("flux_schnell_tiny") +
                           " --device cpu --height 64 --width 64 --warmup 0 --iters 1 --vae-chunk-frames 2");
  EXPECT_NE(image.code, 0);
  EXPECT_NE(image.out.find("vae_chunk_frames 2: AutoencoderKL decodes one image"), std::string::npos) << image.out;
  const Result zero = run("bench vae --model " + fixture("wan21_t2v_tiny") + size + " --vae-chunk-frames 0");
  EXPECT_NE(zero.code, 0);
  EXPECT_NE(zero.out.find("--vae-chunk-frames: must be a positive number"), std::string::npos) << zero.out;
}
