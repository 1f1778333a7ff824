// AutoencoderKLWan decode vs diffusers 0.42.1 on the tiny fixture VAEs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/json.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

// CPU float32 vs diffusers float32: convolutions summed in another order (im2col + BLAS vs
// oneDNN) over ~20 layers move the result by ~1e-7 relative; 1e-5 leaves room without
// hiding a wrong op (a missing cache frame or a swapped time_conv half moves it by >1e-2).
constexpr double kTolerance = 1e-5;

void expect_decode_matches(const std::string& name) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture(name + "/vae"), DType::F32, Device::cpu());
  const WeightStore ref = reference(name + "_ref/vae.safetensors");
  for (const auto& [z_name, video_name] : {std::pair{"z", "video"}, std::pair{"z_b", "video_b"}}) {
    const Tensor z = ref.get(z_name);
    const Tensor expected = ref.get(video_name);
    const auto start = std::chrono::steady_clock::now();
    const Tensor video = vae->decode(z);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_EQ(video.shape(), expected.shape()) << name << " " << z_name;
    const double err = rel_l2(video, expected);
    std::cout << name << " " << z_name << " " << shape_str(z.shape()) << " -> " << shape_str(video.shape())
              << ": rel L2 " << err << ", max abs diff " << max_abs_diff(video, expected) << ", " << ms << " ms\n";
    EXPECT_LT(err, kTolerance) << name << " " << z_name;
  }
}

// Copies the tiny VAE folder to a temp dir with its config edited and/or one tensor dropped.
std::string edited_vae(const std::string& tag, const Json& config_patch, const std::string& drop_tensor) {
  const std::string src = fixture("wan21_t2v_tiny/vae");
  const std::string dir = ::testing::TempDir() + "/wan_vae_" + tag;
  std::filesystem::create_directories(dir);
  Json config = read_json_file(src + "/config.json");
  config.merge_patch(config_patch);
  std::ofstream(dir + "/config.json") << config.dump(2);
  const WeightStore store = WeightStore::open_dir(src);
  std::map<std::string, Tensor> tensors;
  for (const std::string& n : store.names())
    if (n != drop_tensor) tensors[n] = store.get(n);
  save_safetensors(dir + "/diffusion_pytorch_model.safetensors", tensors);
  return dir;
}

std::string load_error(const std::string& dir) {
  try {
    AutoencoderKLWan::from_pretrained(dir, DType::F32, Device::cpu());
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(WanVae, ConfigFromFixture) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture("wan21_t2v_tiny_b/vae"), DType::F32, Device::cpu());
  const AutoencoderKLWanConfig& c = vae->config();
  EXPECT_EQ(c.base_dim, 4);
  EXPECT_EQ(c.z_dim, 16);
  EXPECT_EQ(c.dim_mult, (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_EQ(c.temperal_downsample, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(c.frames_per_latent(), 4);
  ASSERT_EQ(c.latents_mean.size(), 16u);
  EXPECT_FLOAT_EQ(c.latents_mean[0], -0.7571f);
  EXPECT_FLOAT_EQ(c.latents_std[15], 1.916f);
}

TEST(WanVae, DecodeMatchesDiffusersTiny) { expect_decode_matches("wan21_t2v_tiny"); }

TEST(WanVae, DecodeMatchesDiffusersTinyB) { expect_decode_matches("wan21_t2v_tiny_b"); }

TEST(WanVae, MissingDecoderTensorIsAnError) {
  const std::string name = "decoder.up_blocks.1.upsamplers.0.time_conv.weight";
  const std::string dir = edited_vae("missing", Json::object(), name);
  const std::string msg = load_error(dir);
  EXPECT_NE(msg.find("missing tensor '" + name + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  // Encoder weights are not needed for decoding: their absence is fine.
  const std::string no_encoder = edited_vae("no_quant_conv", Json::object(), "quant_conv.weight");
  EXPECT_NO_THROW(AutoencoderKLWan::from_pretrained(no_encoder, DType::F32, Device::cpu()));
}

TEST(WanVae, DecoderWeightsThatDisagreeWithConfigAreErrors) {
  // num_res_blocks 0 leaves decoder.*.resnets.1.* unused: the config describes another decoder.
  const std::string msg = load_error(edited_vae("res0", {{"num_res_blocks", 0}}, ""));
  // The message counts and lists the leftovers (it used to name only the first).
  EXPECT_NE(msg.find("24 unexpected tensor(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'decoder.up_blocks.0.resnets.1."), std::string::npos) << msg;
  // z_dim 8 changes conv_in's shape.
  const std::string msg2 = load_error(edited_vae("zdim", {{"z_dim", 8}, {"latents_mean", std::vector<float>(8, 0.0f)},
                                                          {"latents_std", std::vector<float>(8, 1.0f)}},
                                                 ""));
  EXPECT_NE(msg2.find("has shape"), std::string::npos) << msg2;
}

TEST(WanVae, UnsupportedWan22FeaturesAreNamed) {
  const std::string residual = edited_vae("residual", {{"is_residual", true}}, "");
  std::string msg = load_error(residual);
  EXPECT_NE(msg.find("is_residual"), std::string::npos) << msg;
  EXPECT_NE(msg.find(residual + "/config.json"), std::string::npos) << msg;
  const std::string patch = edited_vae("patch", {{"patch_size", 2}}, "");
  msg = load_error(patch);
  EXPECT_NE(msg.find("patch_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find(patch + "/config.json"), std::string::npos) << msg;
  msg = load_error(edited_vae("tdown", {{"temperal_downsample", {false, true}}}, ""));
  EXPECT_NE(msg.find("temperal_downsample"), std::string::npos) << msg;
}

TEST(WanVae, DecodeRejectsBadInput) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture("wan21_t2v_tiny/vae"), DType::F32, Device::cpu());
  EXPECT_THROW(vae->decode(Tensor::zeros({1, 8, 1, 4, 4})), Error);
  EXPECT_THROW(vae->decode(Tensor::zeros({16, 1, 4, 4})), Error);
}

// Opt-in (needs ~500 MB written by tools/fixtures/make_wan_vae_bench.py): the real Wan2.1
// widths (base_dim 96, attention over 384 channels) with random weights, vs diffusers, and
// the CPU decode time next to diffusers'.
TEST(WanVaeBench, RealConfigRandomWeights) {
  const char* dir = std::getenv("VGEN_WAN_VAE_BENCH");
  if (dir == nullptr) GTEST_SKIP() << "set VGEN_WAN_VAE_BENCH to the output of tools/fixtures/make_wan_vae_bench.py";
  auto start = std::chrono::steady_clock::now();
  const auto vae = AutoencoderKLWan::from_pretrained(std::string(dir) + "/vae", DType::F32, Device::cpu());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const WeightStore ref = WeightStore::open_files({std::string(dir) + "/vae_bench.safetensors"});
  const Json info = read_json_file(std::string(dir) + "/vae_bench.json");
  const Tensor z = ref.get("z"), expected = ref.get("video");
  vae->decode(z.narrow(2, 0, 1));  // warm-up, as the script does for diffusers
  start = std::chrono::steady_clock::now();
  const Tensor video = vae->decode(z);
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double err = rel_l2(video, expected);
  std::cout << "base_dim " << vae->config().base_dim << ", z " << shape_str(z.shape()) << " -> "
            << shape_str(video.shape()) << ": load " << load_s << " s, decode " << decode_s << " s (diffusers "
            << info.value("diffusers_decode_s", 0.0) << " s with " << info.value("threads", 0)
            << " torch threads); rel L2 " << err << ", max abs diff " << max_abs_diff(video, expected) << "\n";
  EXPECT_LT(err, kTolerance);
}
