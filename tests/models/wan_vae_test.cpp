// AutoencoderKLWan encode and decode vs diffusers 0.42.1 on the tiny fixture VAEs (Wan2.1 and
// Wan2.2), and its refusals.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/random.h"
#include "io/json.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/autoencoder_kl_wan_blocks.h"
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

// Latent frames per call of the decoder's head and of the rest after the first chunk: the
// defaults; diffusers' one frame throughout; 3 latent frames as heads of 2 and 1; the rest 2
// frames at once (chunks 1 + 2), capped by a head's end (2 + 1 cut to 1 + 1 + 1), and 3.
struct Chunking {
  int64_t head, rest;
};
constexpr Chunking kChunkings[] = {{AutoencoderKLWan::kDefaultDecodeHeadFrames, 1}, {1, 1}, {2, 1},
                                   {AutoencoderKLWan::kDefaultDecodeHeadFrames, 2}, {2, 2},
                                   {AutoencoderKLWan::kDefaultDecodeHeadFrames, 3}};

void expect_decode_matches(const std::string& name) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture(name + "/vae"), DType::F32, Device::cpu());
  const WeightStore ref = reference(name + "_ref/vae.safetensors");
  for (const Chunking& chunking : kChunkings) {
    vae->set_decode_head_frames(chunking.head);
    vae->set_decode_chunk_frames(chunking.rest);
    for (const auto& [z_name, video_name] : {std::pair{"z", "video"}, std::pair{"z_b", "video_b"}}) {
      const Tensor z = ref.get(z_name);
      const Tensor expected = ref.get(video_name);
      const auto start = std::chrono::steady_clock::now();
      const Tensor video = vae->decode(z);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      const std::string what = fmt::format("{} {} (head {} / rest {} frames)", name, z_name, chunking.head, chunking.rest);
      ASSERT_EQ(video.shape(), expected.shape()) << what;
      const double err = rel_l2(video, expected);
      std::cout << what << " " << shape_str(z.shape()) << " -> " << shape_str(video.shape()) << ": rel L2 " << err
                << ", max abs diff " << max_abs_diff(video, expected) << ", " << ms << " ms\n";
      EXPECT_LT(err, kTolerance) << what;
    }
  }
}

// Copies a tiny VAE folder to a temp dir with its config edited and/or one tensor dropped.
std::string edited_vae(const std::string& tag, const Json& config_patch, const std::string& drop_tensor,
                       const std::string& src = fixture("wan21_t2v_tiny/vae")) {
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

constexpr AutoencoderKLWan::Parts kDecoderOnly{.encoder = false};

// Tensors written by tools/fixtures/make_wan_vae_extra.py.
const WeightStore& extra_ref() {
  static const WeightStore ref = reference("wan_vae_tiny/ref.safetensors");
  return ref;
}

// encode(video) against diffusers' encode(video).latent_dist.mode() for each case of `vae`.
void expect_encode_matches(const std::string& vae_name, const std::string& dir, const std::vector<std::string>& cases) {
  const auto vae = AutoencoderKLWan::from_pretrained(dir, DType::F32, Device::cpu());
  for (const std::string& c : cases) {
    const std::string key = vae_name + "." + c;
    const Tensor video = extra_ref().get(key + ".video");
    const Tensor expected = extra_ref().get(key + ".latent");
    const auto start = std::chrono::steady_clock::now();
    const Tensor latent = vae->encode(video);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_EQ(latent.shape(), expected.shape()) << key;
    const double err = rel_l2(latent, expected);
    std::cout << key << " encode " << shape_str(video.shape()) << " -> " << shape_str(latent.shape()) << ": rel L2 "
              << err << ", max abs diff " << max_abs_diff(latent, expected) << ", " << ms << " ms\n";
    EXPECT_LT(err, kTolerance) << key;
  }
}

std::string load_error(const std::string& dir, AutoencoderKLWan::Parts parts = {}) {
  try {
    AutoencoderKLWan::from_pretrained(dir, DType::F32, Device::cpu(), parts);
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
  const std::string msg = load_error(dir, kDecoderOnly);
  EXPECT_NE(msg.find("missing tensor '" + name + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  // Encoder weights are not needed for decoding only: their absence is fine then, an error otherwise.
  const std::string no_encoder = edited_vae("no_quant_conv", Json::object(), "quant_conv.weight");
  EXPECT_NO_THROW(AutoencoderKLWan::from_pretrained(no_encoder, DType::F32, Device::cpu(), kDecoderOnly));
  const std::string msg2 = load_error(no_encoder);
  EXPECT_NE(msg2.find("missing tensor 'quant_conv.weight'"), std::string::npos) << msg2;
  // Likewise the decoder's for encoding only.
  const std::string no_decoder = edited_vae("no_conv_out", Json::object(), "decoder.conv_out.weight");
  EXPECT_NO_THROW(AutoencoderKLWan::from_pretrained(no_decoder, DType::F32, Device::cpu(), {.decoder = false}));
  EXPECT_NE(load_error(no_decoder).find("missing tensor 'decoder.conv_out.weight'"), std::string::npos);
}

TEST(WanVae, MissingEncoderTensorIsAnError) {
  const std::string name = "encoder.down_blocks.3.time_conv.weight";
  const std::string dir = edited_vae("missing_enc", Json::object(), name);
  const std::string msg = load_error(dir);
  EXPECT_NE(msg.find("missing tensor '" + name + "'"), std::string::npos) << msg;
}

TEST(WanVae, PartsNotLoadedAreRefusedByName) {
  const std::string dir = fixture("wan21_t2v_tiny/vae");
  const auto decoder_only = AutoencoderKLWan::from_pretrained(dir, DType::F32, Device::cpu(), kDecoderOnly);
  try {
    decoder_only->encode(Tensor::zeros({1, 3, 1, 8, 8}));
    ADD_FAILURE() << "encode without an encoder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Parts::encoder"), std::string::npos) << e.what();
  }
  const auto encoder_only = AutoencoderKLWan::from_pretrained(dir, DType::F32, Device::cpu(), {.decoder = false});
  EXPECT_THROW(encoder_only->decode(Tensor::zeros({1, 16, 1, 1, 1})), Error);
  EXPECT_NE(load_error(dir, {.encoder = false, .decoder = false}).find("neither"), std::string::npos);
}

TEST(WanVae, DecoderWeightsThatDisagreeWithConfigAreErrors) {
  // num_res_blocks 0 leaves decoder.*.resnets.1.* unused: the config describes another decoder.
  const std::string msg = load_error(edited_vae("res0", {{"num_res_blocks", 0}}, ""), kDecoderOnly);
  // The message counts and lists the leftovers (it used to name only the first).
  EXPECT_NE(msg.find("24 unexpected tensor(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'decoder.up_blocks.0.resnets.1."), std::string::npos) << msg;
  // z_dim 8 changes conv_in's shape.
  const std::string msg2 = load_error(edited_vae("zdim", {{"z_dim", 8}, {"latents_mean", std::vector<float>(8, 0.0f)},
                                                          {"latents_std", std::vector<float>(8, 1.0f)}},
                                                 ""));
  EXPECT_NE(msg2.find("has shape"), std::string::npos) << msg2;
}

TEST(WanVae, InvalidConfigsAreNamed) {
  auto expect_error = [](const std::string& tag, const Json& patch, const std::string& field,
                         AutoencoderKLWan::Parts parts = {}) {
    const std::string dir = edited_vae(tag, patch, "");
    const std::string msg = load_error(dir, parts);
    EXPECT_NE(msg.find(field), std::string::npos) << tag << ": " << msg;
    EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << tag << ": " << msg;
  };
  // 3 channels cannot be patchified into 2x2 patches.
  expect_error("patch", {{"patch_size", 2}}, "in_channels 3");
  expect_error("patch0", {{"patch_size", 0}}, "patch_size 0");
  // The pipelines size latents by the scale factors.
  expect_error("sfs", {{"scale_factor_spatial", 16}}, "scale_factor_spatial 16");
  expect_error("sft", {{"scale_factor_temporal", 8}}, "scale_factor_temporal 8");
  expect_error("tdown", {{"temperal_downsample", {false, true}}}, "temperal_downsample");
  // Wan2.2's shortcuts regroup channels: 3 channels x 2x2 positions do not average into 9.
  expect_error("avgdown", {{"is_residual", true}, {"dim_mult", {3, 3, 3, 3}}}, "AvgDown3D");
  // diffusers' Wan2.1 encoder cannot run attention in its down blocks (scale 1/2 = the second
  // level); the decoder does not use attn_scales, so decoding only is fine.
  expect_error("attn", {{"attn_scales", {0.5}}}, "attn_scales", {});
  EXPECT_NO_THROW(AutoencoderKLWan::from_pretrained(edited_vae("attn", {{"attn_scales", {0.5}}}, ""), DType::F32,
                                                    Device::cpu(), kDecoderOnly));
  // A scale no level has adds no block in diffusers either.
  EXPECT_NO_THROW(AutoencoderKLWan::from_pretrained(edited_vae("attn3", {{"attn_scales", {0.3}}}, ""), DType::F32,
                                                    Device::cpu()));
}

TEST(WanVae, Wan22ConfigFromFixture) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture("wan_vae_tiny/wan22"), DType::F32, Device::cpu());
  const AutoencoderKLWanConfig& c = vae->config();
  EXPECT_TRUE(c.is_residual);
  EXPECT_EQ(c.patch(), 2);
  EXPECT_EQ(c.decoder_dim(), 3);
  EXPECT_EQ(c.spatial_compression(), 16);
  EXPECT_EQ(c.frames_per_latent(), 4);
  EXPECT_EQ(c.encoder_dims(), (std::vector<int64_t>{4, 4, 8, 16, 16}));
  EXPECT_EQ(c.decoder_dims(), (std::vector<int64_t>{12, 12, 12, 6, 3}));
  ASSERT_EQ(c.latents_mean.size(), 8u);
}

TEST(WanVae, EncodeMatchesDiffusersWan21) {
  // First frame only, 1 + 4 + 4 frames of a non-square video, and a batch of 2.
  expect_encode_matches("wan21", fixture("wan_vae_tiny/wan21"), {"f1", "f9", "b2f5"});
}

TEST(WanVae, EncodeMatchesDiffusersT2vTiny) {
  expect_encode_matches("wan21_t2v_tiny", fixture("wan21_t2v_tiny/vae"), {"f9"});
}

TEST(WanVae, EncodeMatchesDiffusersWan22) {
  expect_encode_matches("wan22", fixture("wan_vae_tiny/wan22"), {"f1", "f9", "b2f5"});
}

TEST(WanVae, DecodeMatchesDiffusersWan22) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture("wan_vae_tiny/wan22"), DType::F32, Device::cpu(),
                                                     kDecoderOnly);
  for (const Chunking& chunking : kChunkings) {
    vae->set_decode_head_frames(chunking.head);
    vae->set_decode_chunk_frames(chunking.rest);
    for (const std::string c : {"t1", "t3"}) {
      const Tensor z = extra_ref().get("wan22." + c + ".z");
      const Tensor expected = extra_ref().get("wan22." + c + ".sample");
      const Tensor video = vae->decode(z);
      const std::string what = fmt::format("wan22.{} (head {} / rest {} frames)", c, chunking.head, chunking.rest);
      ASSERT_EQ(video.shape(), expected.shape()) << what;
      const double err = rel_l2(video, expected);
      std::cout << what << " decode " << shape_str(z.shape()) << " -> " << shape_str(video.shape()) << ": rel L2 "
                << err << ", max abs diff " << max_abs_diff(video, expected) << "\n";
      EXPECT_LT(err, kTolerance) << what;
    }
  }
  EXPECT_THROW(vae->set_decode_head_frames(0), Error);
  EXPECT_THROW(vae->set_decode_chunk_frames(0), Error);
}

// DupUp3D against its definition in diffusers (repeat_interleave of the channels, then groups
// of factor_t x factor_s x factor_s channels become positions), element by element: one
// stride-0 copy when repeats is a whole number of groups or the size of the innermost offsets,
// a materialized repeat otherwise; channels-last inputs give the same values and keep the layout.
TEST(WanVae, DupUp3DIsRepeatInterleaveThenRegroup) {
  struct C {
    int64_t in, out, ft, fs;
  };
  // repeats = out * ft * fs * fs / in: 8 (= a group, Wan2.2's first blocks), 2 (its third), 16, 1, 4, 3 (uneven).
  for (const C c : {C{4, 4, 2, 2}, C{4, 2, 1, 2}, C{2, 4, 2, 2}, C{8, 2, 1, 2}, C{4, 2, 2, 2}, C{4, 3, 1, 2}}) {
    const int64_t b = 2, t = 3, h = 2, w = 3, factor = c.ft * c.fs * c.fs, repeats = c.out * factor / c.in;
    const Tensor x = randn({b, c.in, t, h, w}, 7);
    const std::vector<float> xv = x.to_vector();
    std::vector<float> expected;
    for (int64_t n = 0; n < b; ++n)
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t tt = 0; tt < t * c.ft; ++tt)
          for (int64_t hh = 0; hh < h * c.fs; ++hh)
            for (int64_t ww = 0; ww < w * c.fs; ++ww) {
              const int64_t k = ((tt % c.ft) * c.fs + hh % c.fs) * c.fs + ww % c.fs;
              const int64_t i = (o * factor + k) / repeats;
              expected.push_back(xv[static_cast<size_t>(((((n * c.in + i) * t + tt / c.ft) * h + hh / c.fs) * w) + ww / c.fs)]);
            }
    const DupUp3D up(c.in, c.out, c.ft, c.fs);
    const std::string what = fmt::format("in {} out {} factor_t {} factor_s {}", c.in, c.out, c.ft, c.fs);
    for (bool channels_last : {false, true}) {
      const Tensor y = up.forward(channels_last ? x.to_channels_last_3d() : x, /*first_chunk=*/false);
      EXPECT_EQ(y.shape(), (Shape{b, c.out, t * c.ft, h * c.fs, w * c.fs})) << what;
      EXPECT_EQ(y.is_channels_last_3d(), channels_last) << what;
      EXPECT_EQ(y.to_vector(), expected) << what << (channels_last ? " channels-last" : "");
    }
    // The first chunk drops the first factor_t - 1 frames.
    const Tensor first = up.forward(x, /*first_chunk=*/true);
    const Tensor full = up.forward(x, /*first_chunk=*/false);
    EXPECT_EQ(first.to_vector(), full.narrow(2, c.ft - 1, t * c.ft - (c.ft - 1)).to_vector()) << what;
    // split_view: the same elements split as [b, out, T / f, f, h, fs, w, fs], a view of x (no
    // copy) where every output channel repeats one of x's, for whole chunks and a first chunk of
    // one frame (f 1) or several (materialized).
    const Tensor x1 = x.narrow(2, 0, 1);
    for (const auto& [in, first_chunk] : {std::pair{x, false}, std::pair{x1, true}, std::pair{x, true}}) {
      const Tensor v = up.split_view(in, first_chunk);
      const Tensor dense = up.forward(in, first_chunk);
      const int64_t f = first_chunk ? 1 : c.ft;
      EXPECT_EQ(v.shape(), (Shape{b, c.out, dense.size(2) / f, f, h, c.fs, w, c.fs})) << what;
      EXPECT_EQ(v.contiguous().to_vector(), dense.contiguous().to_vector()) << what << " first " << first_chunk;
      // Every output channel repeats one of x's unless repeats is 2 groups (16) or uneven (3).
      const bool one_channel = repeats != 16 && repeats != 3;
      const bool whole_frames = !first_chunk || c.ft == 1 || in.size(2) == 1;
      EXPECT_EQ(v.storage() == in.storage(), one_channel && whole_frames) << what << " first " << first_chunk;
    }
  }
}

TEST(WanVae, EncodeRejectsBadInput) {
  const auto vae = AutoencoderKLWan::from_pretrained(fixture("wan_vae_tiny/wan22"), DType::F32, Device::cpu());
  EXPECT_NO_THROW(vae->encode(Tensor::zeros({1, 3, 5, 16, 32})));
  for (const Shape& bad : {Shape{1, 3, 4, 16, 32},    // not 1 + 4k frames
                           Shape{1, 3, 5, 8, 32},     // H not a multiple of 16
                           Shape{1, 12, 5, 16, 32},   // patchified channels instead of 3
                           Shape{3, 5, 16, 32}}) {
    try {
      vae->encode(Tensor::zeros(bad));
      ADD_FAILURE() << "encode of " << shape_str(bad);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[B, 3, 1 + 4k, H, W] with H and W multiples of 16"), std::string::npos)
          << e.what();
    }
  }
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
