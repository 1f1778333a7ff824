// FluxPipeline end to end against diffusers 0.42.1 on the tiny random checkpoints of
// tools/fixtures/make_flux_fixtures.py (flux_dev_tiny: guidance-distilled, dynamic shifting;
// flux_schnell_tiny: no guidance embedding, shift 1), from the same packed initial latents
// (diffusers' `latents=`), in float32 on the CPU: the denoised latents to 1e-5 relative L2 (a
// few 1e-7 expected: summation order only), the uint8 image within one level.
#include <gtest/gtest.h>

#include <cmath>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "ops/ops.h"
#include "pipelines/flux/pipeline_flux.h"
#include "pipelines/registry.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

std::unique_ptr<DiffusionPipeline> load(const std::string& name) {
  return load_pipeline(fixture(name), default_pipeline_options(Device::cpu()));
}

// Runs `params` and compares the packed denoised latents and the uint8 image with `tag`'s references.
void expect_matches(DiffusionPipeline& pipe, const WeightStore& ref, const std::string& tag, GenerationParams params) {
  params.latents = ref.get("latents");
  const ResolvedParams r = pipe.resolve(params);
  const GenerationOutput out = pipe.generate(r);
  const Tensor packed = flux_pack_latents(out.denoised_latents);
  const double rel = rel_l2(packed, ref.get(tag + "_denoised_latents"));
  std::cout << "  " << tag << " denoised latents: rel L2 " << rel << "\n";
  EXPECT_LT(rel, 1e-5) << tag;
  ASSERT_EQ(out.frames.shape(), (Shape{1, r.height, r.width, 3}));
  const Tensor want = ref.get(tag + "_image_uint8");
  const std::vector<float> got = out.frames.reshape({r.height, r.width, 3}).to_vector(), exp = want.to_vector();
  int worst = 0, off = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int d = static_cast<int>(std::lround(std::fabs(got[i] - exp[i])));
    worst = std::max(worst, d);
    off += d != 0;
  }
  std::cout << "  " << tag << " image: max uint8 difference " << worst << ", " << off << " of " << got.size()
            << " values differ\n";
  EXPECT_LE(worst, 1) << tag;
}

// A dev call of the fixture: its prompt, guidance 3.5, `steps` at height x width.
GenerationParams dev_call(int steps, int64_t height, int64_t width) {
  GenerationParams p;
  p.prompt = "a red fox jumps over the lazy dog";
  p.height = height;
  p.width = width;
  p.num_inference_steps = steps;
  p.guidance_scale = 3.5;
  return p;
}

}  // namespace

TEST(FluxPipeline, DevMatchesDiffusers) {
  const auto pipe = load("flux_dev_tiny");
  EXPECT_EQ(pipe->class_name(), "FluxPipeline");
  const PipelineCapabilities& c = pipe->capabilities();
  EXPECT_TRUE(c.supports("text-to-image"));
  EXPECT_EQ(c.default_num_inference_steps, 28);
  EXPECT_DOUBLE_EQ(c.default_guidance_scale, 3.5);
  EXPECT_EQ(c.default_max_sequence_length, 512);
  EXPECT_EQ(c.default_height, 1024);
  EXPECT_EQ(c.spatial_multiple, 16);
  const WeightStore ref = reference("flux_dev_tiny_ref/pipeline.safetensors");
  expect_matches(*pipe, ref, "dev", dev_call(3, 48, 32));
}

namespace {

// The dev_cfg calls of the fixture: 2 steps, guidance 3.5, true_cfg_scale 2 with `negative`.
GenerationParams true_cfg_call(const std::string& negative) {
  GenerationParams p = dev_call(2, 48, 32);
  p.negative_prompt = negative;
  p.true_cfg_scale = 2.0;
  return p;
}

}  // namespace

TEST(FluxPipeline, TrueCfgMatchesDiffusers) {
  const auto pipe = load("flux_dev_tiny");
  const WeightStore ref = reference("flux_dev_tiny_ref/pipeline.safetensors");
  expect_matches(*pipe, ref, "dev_cfg", true_cfg_call("blurry, low quality"));
}

// diffusers runs true CFG whenever a negative prompt is given (`negative_prompt is not None`):
// against the empty prompt too. Without one it does not, whatever true_cfg_scale says.
TEST(FluxPipeline, TrueCfgWithAnEmptyNegativePromptMatchesDiffusers) {
  const auto pipe = load("flux_dev_tiny");
  const WeightStore ref = reference("flux_dev_tiny_ref/pipeline.safetensors");
  GenerationParams p = true_cfg_call("");
  expect_matches(*pipe, ref, "dev_cfg_empty", p);
  // No negative prompt: no true CFG, the plain run's result (diffusers' 2 steps at guidance 3.5).
  p.negative_prompt.reset();
  const GenerationOutput plain = pipe->generate(pipe->resolve([&] {
    GenerationParams q = p;
    q.true_cfg_scale.reset();
    q.latents = ref.get("latents");
    return q;
  }()));
  p.latents = ref.get("latents");
  const GenerationOutput unguided = pipe->generate(pipe->resolve(p));
  EXPECT_EQ(unguided.frames.to_vector(), plain.frames.to_vector());
}

TEST(FluxPipeline, SchnellMatchesDiffusers) {
  const auto pipe = load("flux_schnell_tiny");
  const PipelineCapabilities& c = pipe->capabilities();
  EXPECT_EQ(c.default_num_inference_steps, 4);
  EXPECT_EQ(c.default_max_sequence_length, 256);
  const WeightStore ref = reference("flux_schnell_tiny_ref/pipeline.safetensors");
  GenerationParams p;
  p.prompt = "a red fox jumps over the lazy dog";
  p.height = 48;
  p.width = 32;
  p.guidance_scale = 0.0;
  expect_matches(*pipe, ref, "schnell", p);  // the defaults: 4 steps, 256 tokens
}

TEST(FluxPipeline, BadRequestsNameTheParameter) {
  const auto pipe = load("flux_dev_tiny");
  auto error = [&](const std::function<void(GenerationParams&)>& edit) {
    GenerationParams p;
    p.prompt = "x";
    edit(p);
    try {
      pipe->resolve(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error([](GenerationParams& p) { p.height = 10; }).find("height must be at least 16 (got 10)"),
            std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) { p.width = 0; }).find("width must be positive"), std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) { p.num_frames = 5; }).find("num_frames"), std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) {
              CacheConfig c;
              c.cache_backend = CacheBackend::FirstBlockCache;
              p.cache = c;
            }).find("cache_config.cache_backend: FluxPipeline runs no step cache"),
            std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) { p.max_sequence_length = 600; }).find("max_sequence_length"),
            std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) { p.latents = Tensor::zeros({1, 16, 6, 4}); }).find("latents"),
            std::string::npos);
  EXPECT_NE(error([](GenerationParams& p) { p.image = Tensor::zeros({8, 8, 3}, DType::U8); }).find("image"),
            std::string::npos);
}

// FluxKontextPipeline on flux_kontext_tiny: a 24x40 input image (auto-resized to the preferred
// resolution nearest its aspect ratio, 720x1456), 2 steps at the default 1024x1024. The
// references are strided (every 16th token, every 8th pixel row and column) to keep the fixture
// small, and the initial latents a formula both sides evaluate exactly (make_flux_fixtures.py's
// formula_latents).
//
// Tolerances: at this size float32 itself is the limit. The random tiny VAE's encode of the
// 720x1456 input (GroupNorm over ~1M values per group, mid-block attention over 16380 tokens)
// differs between diffusers' own float32 and float64 runs by 7.9e-5 relative L2 (measured with
// diffusers 0.42.1 / torch 2.15 CPU), so vgen's float32 is held to a few times that: 5e-4 on the
// reference tokens, 1e-4 on the denoised latents, and one uint8 level on the image.
TEST(FluxPipeline, KontextMatchesDiffusers) {
  const auto pipe_base = load("flux_kontext_tiny");
  auto* pipe = dynamic_cast<FluxPipeline*>(pipe_base.get());
  ASSERT_NE(pipe, nullptr);
  EXPECT_EQ(pipe->class_name(), "FluxKontextPipeline");
  EXPECT_TRUE(pipe->capabilities().image_input);
  const WeightStore ref = reference("flux_kontext_tiny_ref/pipeline.safetensors");
  const Tensor image = media::read_image(fixture("flux_kontext_tiny_ref/kontext_input.png"));

  // The reference tokens: resize, encode, scale, pack.
  const Tensor image_latents = pipe->encode_image_latents(pipe->preprocess_image(image));
  EXPECT_EQ(image_latents.size(1), static_cast<int64_t>(ref.get("image_tokens").item()));
  std::vector<int64_t> every16;
  for (int64_t i = 0; i < image_latents.size(1); i += 16) every16.push_back(i);
  auto strided = [&](const Tensor& x) {
    std::vector<Tensor> rows;
    for (int64_t i : every16) rows.push_back(x.narrow(1, i, 1));
    return ops::cat(rows, 1);
  };
  const double rel_image = rel_l2(strided(image_latents), ref.get("image_latents_every16"));
  std::cout << "  kontext image tokens: rel L2 " << rel_image << "\n";
  EXPECT_LT(rel_image, 5e-4);

  GenerationParams p;
  p.prompt = "a red fox jumps over the lazy dog";
  p.image = image;
  p.num_inference_steps = 2;
  p.guidance_scale = 2.5;
  const int64_t S = 64 * 64;
  std::vector<float> noise(static_cast<size_t>(S * 64));
  for (size_t i = 0; i < noise.size(); ++i)
    noise[i] = static_cast<float>((static_cast<double>((i * 7919) % 1000) / 500.0 - 1.0) * 1.7);
  p.latents = Tensor::from_vector(noise, {1, S, 64});
  const ResolvedParams r = pipe->resolve(p);
  EXPECT_EQ(r.height, 1024);
  EXPECT_EQ(r.width, 1024);
  const GenerationOutput out = pipe->generate(r);
  const Tensor packed = flux_pack_latents(out.denoised_latents);
  std::vector<Tensor> rows;
  for (int64_t i = 0; i < S; i += 16) rows.push_back(packed.narrow(1, i, 1));
  const double rel = rel_l2(ops::cat(rows, 1), ref.get("denoised_latents_every16"));
  std::cout << "  kontext denoised latents (every 16th token): rel L2 " << rel << "\n";
  EXPECT_LT(rel, 1e-4);
  const Tensor want = ref.get("image_uint8_every8");
  const std::vector<float> exp = want.to_vector();
  const Tensor frame = out.frames.select(0, 0);  // [H, W, 3]
  int worst = 0;
  for (int64_t y = 0; y < 128; ++y)
    for (int64_t x = 0; x < 128; ++x) {
      const std::vector<float> px = frame.narrow(0, y * 8, 1).narrow(1, x * 8, 1).contiguous().to_vector();
      for (int c = 0; c < 3; ++c)
        worst = std::max(worst, static_cast<int>(std::lround(std::fabs(px[c] - exp[(y * 128 + x) * 3 + c]))));
    }
  std::cout << "  kontext image (every 8th pixel): max uint8 difference " << worst << "\n";
  EXPECT_LE(worst, 1);
}

TEST(FluxPipeline, AnEngineCacheConfigFailsTheLoad) {
  PipelineOptions options = default_pipeline_options(Device::cpu());
  options.cache.cache_backend = CacheBackend::TeaCache;
  try {
    load_pipeline(fixture("flux_dev_tiny"), options);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache_config.cache_backend: FluxPipeline runs no step cache"),
              std::string::npos)
        << e.what();
  }
}

// diffusers' run at 55x41 (rounded down to 48x32, the reference latents' size).
TEST(FluxPipeline, OffGridSizeMatchesDiffusers) {
  const auto pipe = load("flux_dev_tiny");
  const WeightStore ref = reference("flux_dev_tiny_ref/pipeline.safetensors");
  expect_matches(*pipe, ref, "dev_offgrid", dev_call(2, 55, 41));
}

// FluxPipeline rounds a size off the 16-pixel grid down to it, with a warning (diffusers'
// check_inputs warns "Dimensions will be resized accordingly"; prepare_latents takes
// 2 * (height // 16) latent rows), so the image comes out at the rounded size.
TEST(FluxPipeline, SizesOffTheGridAreRoundedDownAsDiffusersDoes) {
  const auto pipe = load("flux_dev_tiny");
  GenerationParams p;
  p.prompt = "x";
  p.height = 47;
  p.width = 33;
  ::testing::internal::CaptureStderr();
  const ResolvedParams r = pipe->resolve(p);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.height, 32);
  EXPECT_EQ(r.width, 32);
  EXPECT_NE(err.find("33x47 runs as 32x32"), std::string::npos) << err;
  ::testing::internal::CaptureStderr();
  (void)pipe->resolve(p);  // the same size again (another video of the run): no second warning
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  p.height = 48;
  p.width = 32;
  ::testing::internal::CaptureStderr();
  const ResolvedParams same = pipe->resolve(p);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(same.height, 48);
}
