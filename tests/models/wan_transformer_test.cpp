// WanTransformer3DModel against diffusers 0.42.1 on the tiny random fixtures.
//
// Tolerance: 1e-5 relative L2 for every stage. Both sides compute in float32 (the bf16-stored
// weights of wan21_t2v_tiny_b are upcast to float32 by both), so what is left is summation
// order in GEMMs/attention/norms and 1-ulp differences of exp/sin/cos: ~1e-7 per op, grown
// by the few layers to a few 1e-7.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/error.h"
#include "core/random.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "models/wan/transformer_wan.h"
#include "ops/ops.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::expect_as_close_as_diffusers_bf16;
using vgen::testing::rel_l2;

namespace fs = std::filesystem;

namespace {

constexpr double kTolerance = 1e-5;

void expect_close(const std::string& what, const Tensor& got, const Tensor& want, double tol = kTolerance) {
  const double rel = rel_l2(got, want);
  std::cout << "  " << what << ": rel L2 " << rel << ", max |diff| " << max_abs_diff(got, want) << "\n";
  EXPECT_LT(rel, tol) << what;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Every stage of one forward against the hooks saved by make_wan_fixtures.py.
void check_against_reference(const std::string& name) {
  const auto model = WanTransformer3DModel::from_pretrained(fixture(name + "/transformer"), DType::F32, Device::cpu());
  const WeightStore ref = reference(name + "_ref/transformer.safetensors");
  const Tensor hidden_states = ref.get("hidden_states"), timestep = ref.get("timestep");
  const Tensor encoder_hidden_states = ref.get("encoder_hidden_states");
  const int64_t dim = model->config().inner_dim();

  const WanPatchedInput input = model->embed_patches(hidden_states);
  const int64_t B = input.batch_size, S = input.hidden_states.size(1);
  // diffusers' hook saw the Conv3d output [B, dim, F, H, W]; the port keeps tokens [B, S, dim].
  const Tensor patches = ref.get("dbg_patch_embedding").reshape({B, dim, S}).permute({0, 2, 1}).contiguous();
  expect_close(name + " patch_embedding", input.hidden_states, patches);
  expect_close(name + " rope cos", input.freqs_cos, ref.get("dbg_rope_cos"));
  expect_close(name + " rope sin", input.freqs_sin, ref.get("dbg_rope_sin"));

  const WanConditioning cond = model->condition(timestep, encoder_hidden_states);
  expect_close(name + " temb", cond.temb, ref.get("dbg_temb"));
  expect_close(name + " timestep_proj", cond.timestep_proj.reshape({B, 6 * dim}), ref.get("dbg_timestep_proj"));
  expect_close(name + " text embedding", cond.encoder_hidden_states, ref.get("dbg_text_embedding"));

  const Tensor blocks_out = model->run_blocks(input, cond);
  expect_close(name + " blocks", blocks_out, ref.get("dbg_last_block_out"));
  const Tensor sample = model->finish(blocks_out, cond, input);
  expect_close(name + " sample (stages)", sample, ref.get("sample"));

  const auto start = std::chrono::steady_clock::now();
  const Tensor out = model->forward(hidden_states, timestep, encoder_hidden_states);
  const double elapsed = seconds_since(start);
  EXPECT_EQ(out.shape(), hidden_states.shape());
  expect_close(name + " sample (forward)", out, ref.get("sample"));
  std::cout << "  " << name << " forward " << hidden_states.str() << ": " << elapsed * 1e3 << " ms\n";
}

// A copy of the wan21_t2v_tiny transformer folder with an edited config and, optionally,
// edited weights; returns the folder.
std::string make_variant(const std::string& tag, const std::function<void(Json&)>& edit_config,
                         const std::function<void(std::map<std::string, Tensor>&)>& edit_weights = {}) {
  const std::string src = fixture("wan21_t2v_tiny/transformer");
  const std::string dir = (fs::path(::testing::TempDir()) / ("wan_transformer_" + tag)).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  Json config = read_json_file(src + "/config.json");
  edit_config(config);
  std::ofstream(dir + "/config.json") << config.dump(2);
  const std::string weights = "/diffusion_pytorch_model.safetensors";
  if (edit_weights) {
    const WeightStore store = WeightStore::open_dir(src);
    std::map<std::string, Tensor> tensors;
    for (const std::string& n : store.names()) tensors[n] = store.get(n);
    edit_weights(tensors);
    save_safetensors(dir + weights, tensors);
  } else {
    fs::copy_file(src + weights, dir + weights);
  }
  return dir;
}

// Loads `dir` and returns the error message (empty when loading succeeded).
std::string load_error(const std::string& dir) {
  try {
    WanTransformer3DModel::from_pretrained(dir, DType::F32, Device::cpu());
  } catch (const Error& e) {
    std::cout << "  error: " << e.what() << "\n";
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(WanTransformer, MatchesDiffusersTiny) { check_against_reference("wan21_t2v_tiny"); }

TEST(WanTransformer, MatchesDiffusersShardedBf16Checkpoint) { check_against_reference("wan21_t2v_tiny_b"); }

// Head dim 128 (2 heads, one layer, 4096 tokens: the shape vgen's own attention kernels take;
// tests/gpu/wan_attention_kernels_gpu_test.cpp runs each on this fixture): the float32 forward
// against diffusers', RoPE's 44 / 42 / 42 split of the head included.
TEST(WanTransformer, MatchesDiffusersHeadDim128) {
  const auto model =
      WanTransformer3DModel::from_pretrained(fixture("wan21_hd128_tiny/transformer"), DType::F32, Device::cpu());
  const WeightStore ref = reference("wan21_hd128_tiny_ref/transformer.safetensors");
  const Tensor out = model->forward(ref.get("hidden_states").to(DType::F32), ref.get("timestep"),
                                    ref.get("encoder_hidden_states"));
  expect_close("head dim 128 sample", out, ref.get("sample"));
  const auto bf16 =
      WanTransformer3DModel::from_pretrained(fixture("wan21_hd128_tiny/transformer"), DType::BF16, Device::cpu());
  const Tensor out_bf16 = bf16->forward(ref.get("hidden_states"), ref.get("timestep"), ref.get("encoder_hidden_states"));
  expect_as_close_as_diffusers_bf16("head dim 128 sample", out_bf16, ref.get("sample"), ref.get("sample_bf16"));
}

// The 2-D timestep path (one timestep per token, as Wan2.2 TI2V): first-frame tokens at t=0.
TEST(WanTransformer, PerTokenTimestepMatchesDiffusers) {
  const auto model =
      WanTransformer3DModel::from_pretrained(fixture("wan21_t2v_tiny/transformer"), DType::F32, Device::cpu());
  const WeightStore ref = reference("wan21_t2v_tiny_ref/transformer.safetensors");
  const WeightStore extra = reference("wan21_t2v_tiny_ref/transformer_extra.safetensors");
  const Tensor out =
      model->forward(ref.get("hidden_states"), extra.get("timestep_per_token"), ref.get("encoder_hidden_states"));
  expect_close("per-token timestep sample", out, extra.get("sample_per_token"));
}

// bf16 compute (weights bf16 except diffusers' float32 modules), held to diffusers' own bf16 run.
TEST(WanTransformer, Bf16ComputeAsCloseAsDiffusersBf16) {
  const auto model =
      WanTransformer3DModel::from_pretrained(fixture("wan21_t2v_tiny/transformer"), DType::BF16, Device::cpu());
  const WeightStore ref = reference("wan21_t2v_tiny_ref/transformer.safetensors");
  const WeightStore extra = reference("wan21_t2v_tiny_ref/transformer_extra.safetensors");
  const Tensor out = model->forward(ref.get("hidden_states"), ref.get("timestep"), ref.get("encoder_hidden_states"));
  EXPECT_EQ(out.dtype(), DType::BF16);
  expect_as_close_as_diffusers_bf16("sample", out, ref.get("sample"), extra.get("sample_bf16"));
  std::cout << "  vgen vs diffusers bf16: " << rel_l2(out, extra.get("sample_bf16")) << "\n";
}

TEST(WanTransformer, RotaryTablesMatchFormula) {
  // Wan2.1's head_dim 128 splits into t/h/w = 44/42/42.
  const WanRotaryPosEmbed rope(128, 1024);
  EXPECT_EQ(rope.t_dim(), 44);
  EXPECT_EQ(rope.h_dim(), 42);
  EXPECT_EQ(rope.w_dim(), 42);
  const int64_t F = 3, H = 5, W = 700, D = 128;
  const WanRotaryPosEmbed::Tables t = rope.forward(F, H, W);
  ASSERT_EQ(t.cos.shape(), (Shape{F * H * W, D}));
  const float* c = t.cos.data<float>();
  const float* s = t.sin.data<float>();
  double worst = 0.0;
  for (int64_t f = 0; f < F; ++f) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const int64_t token = (f * H + h) * W + w;
        for (int64_t j = 0; j < D; ++j) {
          // Channel j belongs to the t, h or w part, pairs (2i, 2i+1) share frequency i.
          const int64_t part = j < 44 ? 44 : 42, begin = j < 44 ? 0 : (j < 86 ? 44 : 86);
          const int64_t pos = j < 44 ? f : (j < 86 ? h : w);
          const int64_t i = (j - begin) / 2;
          const double angle = pos * std::pow(10000.0, -2.0 * i / part);
          worst = std::max({worst, std::fabs(c[token * D + j] - std::cos(angle)),
                            std::fabs(s[token * D + j] - std::sin(angle))});
        }
      }
    }
  }
  // float32 rounding of values in [-1, 1].
  EXPECT_LT(worst, 1e-7);
  EXPECT_THROW(rope.forward(1, 1, 1025), Error);
}

TEST(WanTransformer, ConfigMismatchNamesTheTensor) {
  std::string msg = load_error(make_variant("head_dim", [](Json& c) { c["attention_head_dim"] = 8; }));
  EXPECT_TRUE(contains(msg, "'patch_embedding.weight' has shape [48, 16, 1, 2, 2], expected [24, 16, 1, 2, 2]")) << msg;

  msg = load_error(make_variant("ffn_dim", [](Json& c) { c["ffn_dim"] = 32; }));
  EXPECT_TRUE(contains(msg, "'blocks.0.ffn.net.0.proj.weight' has shape [64, 48], expected [32, 48]")) << msg;

  const std::string more_layers = make_variant("more_layers", [](Json& c) { c["num_layers"] = 4; });
  msg = load_error(more_layers);
  EXPECT_TRUE(contains(msg, more_layers) && contains(msg, "missing tensor 'blocks.3.")) << msg;

  const std::string fewer_layers = make_variant("fewer_layers", [](Json& c) { c["num_layers"] = 2; });
  msg = load_error(fewer_layers);
  EXPECT_TRUE(contains(msg, fewer_layers) && contains(msg, "not used") && contains(msg, "'blocks.2.")) << msg;

  msg = load_error(make_variant("no_norm2", [](Json& c) { c["cross_attn_norm"] = false; }));
  EXPECT_TRUE(contains(msg, "'blocks.0.norm2.bias'")) << msg;
}

TEST(WanTransformer, MissingOrExtraTensorIsNamed) {
  const std::string missing = make_variant("missing", [](Json&) {}, [](std::map<std::string, Tensor>& w) {
    w.erase("blocks.1.ffn.net.2.bias");
  });
  std::string msg = load_error(missing);
  EXPECT_TRUE(contains(msg, missing) && contains(msg, "missing tensor 'blocks.1.ffn.net.2.bias'")) << msg;

  const std::string extra = make_variant("extra", [](Json&) {}, [](std::map<std::string, Tensor>& w) {
    w["blocks.0.attn2.add_k_proj.weight"] = Tensor::zeros({48, 48});
  });
  msg = load_error(extra);
  EXPECT_TRUE(contains(msg, extra) && contains(msg, "'blocks.0.attn2.add_k_proj.weight'")) << msg;
}

TEST(WanTransformer, UnsupportedConfigValuesAreNamed) {
  // Image-to-video needs both the image embedder's width and the cross-attention's image projections.
  const std::string i2v = make_variant("i2v", [](Json& c) { c["image_dim"] = 1280; });
  std::string msg = load_error(i2v);
  EXPECT_TRUE(contains(msg, i2v + "/config.json") && contains(msg, "'added_kv_proj_dim'") &&
              contains(msg, "must be set together"))
      << msg;
  msg = load_error(make_variant("added_kv", [](Json& c) { c["added_kv_proj_dim"] = 48; }));
  EXPECT_TRUE(contains(msg, "'image_dim'") && contains(msg, "must be set together")) << msg;
  msg = load_error(make_variant("added_kv_width", [](Json& c) {
    c["image_dim"] = 32;
    c["added_kv_proj_dim"] = 40;
  }));
  EXPECT_TRUE(contains(msg, "'added_kv_proj_dim'") && contains(msg, "must equal num_attention_heads")) << msg;
  msg = load_error(make_variant("pos_embed", [](Json& c) { c["pos_embed_seq_len"] = 514; }));
  EXPECT_TRUE(contains(msg, "'pos_embed_seq_len'") && contains(msg, "needs an image_dim")) << msg;

  msg = load_error(make_variant("qk_norm", [](Json& c) { c["qk_norm"] = "layer_norm"; }));
  EXPECT_TRUE(contains(msg, "/config.json: field 'qk_norm' is \"layer_norm\"")) << msg;
  msg = load_error(make_variant("qk_norm_null", [](Json& c) { c["qk_norm"] = nullptr; }));
  EXPECT_TRUE(contains(msg, "/config.json: field 'qk_norm' is null")) << msg;

  msg = load_error(make_variant("patch", [](Json& c) { c["patch_size"] = {2, 2}; }));
  EXPECT_TRUE(contains(msg, "field 'patch_size'")) << msg;

  msg = load_error(make_variant("odd_head", [](Json& c) { c["attention_head_dim"] = 15; }));
  EXPECT_TRUE(contains(msg, "field 'attention_head_dim' must be even")) << msg;

  msg = load_error(make_variant("heads_type", [](Json& c) { c["num_attention_heads"] = "three"; }));
  EXPECT_TRUE(contains(msg, "field 'num_attention_heads' must be an integer, got \"three\"")) << msg;

  msg = load_error(make_variant("class", [](Json& c) { c["_class_name"] = "WanVACETransformer3DModel"; }));
  EXPECT_TRUE(contains(msg, "_class_name is 'WanVACETransformer3DModel'")) << msg;
}

// Timing at Wan2.1-1.3B widths (12 x 128 heads, ffn 8960, text_dim 4096) with 2 random
// layers, 1950 video tokens (latents 16 x 5 x 30 x 52, i.e. 17 frames of 240x416) and 512
// text tokens. Not a correctness test: run with --gtest_also_run_disabled_tests.
TEST(WanTransformer, DISABLED_TimeForward1p3BWidths) {
  const int64_t dim = 1536, ffn = 8960, text_dim = 4096, freq = 256, layers = 2;
  const std::string dir = (fs::path(::testing::TempDir()) / "wan_transformer_1p3b_widths").string();
  fs::create_directories(dir);
  Json config = read_json_file(fixture("wan21_t2v_tiny/transformer/config.json"));
  config["num_attention_heads"] = 12;
  config["attention_head_dim"] = 128;
  config["ffn_dim"] = ffn;
  config["text_dim"] = text_dim;
  config["num_layers"] = layers;
  std::ofstream(dir + "/config.json") << config.dump(2);
  std::map<std::string, Tensor> w;
  uint64_t seed = 0;
  auto add = [&](const std::string& name, const Shape& shape, float std) {
    w[name] = ops::scale(randn(shape, ++seed), std);
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    add(name + ".weight", {out, in}, 1.0f / std::sqrt(static_cast<float>(in)));
    add(name + ".bias", {out}, 0.05f);
  };
  add("patch_embedding.weight", {dim, 16, 1, 2, 2}, 0.125f);
  add("patch_embedding.bias", {dim}, 0.05f);
  linear("condition_embedder.time_embedder.linear_1", dim, freq);
  linear("condition_embedder.time_embedder.linear_2", dim, dim);
  linear("condition_embedder.time_proj", 6 * dim, dim);
  linear("condition_embedder.text_embedder.linear_1", dim, text_dim);
  linear("condition_embedder.text_embedder.linear_2", dim, dim);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    add(p + "scale_shift_table", {1, 6, dim}, 1.0f / std::sqrt(static_cast<float>(dim)));
    for (const char* a : {"attn1.", "attn2."}) {
      for (const char* l : {"to_q", "to_k", "to_v", "to_out.0"}) linear(p + a + l, dim, dim);
      w[p + a + "norm_q.weight"] = Tensor::full({dim}, 1.0f);
      w[p + a + "norm_k.weight"] = Tensor::full({dim}, 1.0f);
    }
    w[p + "norm2.weight"] = Tensor::full({dim}, 1.0f);
    w[p + "norm2.bias"] = Tensor::zeros({dim});
    linear(p + "ffn.net.0.proj", ffn, dim);
    linear(p + "ffn.net.2", dim, ffn);
  }
  add("scale_shift_table", {1, 2, dim}, 1.0f / std::sqrt(static_cast<float>(dim)));
  linear("proj_out", 64, dim);
  save_safetensors(dir + "/diffusion_pytorch_model.safetensors", w);
  w.clear();

  const auto model = WanTransformer3DModel::from_pretrained(dir, DType::F32, Device::cpu());
  const Tensor x = randn({1, 16, 5, 30, 52}, 100);
  const Tensor t = Tensor::from_vector({999.0f}, {1});
  const Tensor text = randn({1, 512, text_dim}, 101);
  auto start = std::chrono::steady_clock::now();
  const WanPatchedInput input = model->embed_patches(x);
  const WanConditioning cond = model->condition(t, text);
  const double prologue = seconds_since(start);
  start = std::chrono::steady_clock::now();
  const Tensor h = model->run_blocks(input, cond);
  const double blocks = seconds_since(start);
  start = std::chrono::steady_clock::now();
  const Tensor out = model->finish(h, cond, input);
  const double epilogue = seconds_since(start);
  EXPECT_EQ(out.shape(), x.shape());
  std::cout << "  1.3B widths, " << input.hidden_states.size(1) << " tokens: embed+condition " << prologue
            << " s, " << layers << " blocks " << blocks << " s (" << blocks / layers << " s/block), finish " << epilogue
            << " s\n";
  fs::remove_all(dir);
}
