#include "cli/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/error.h"
#include "core/random.h"
#include "io/safetensors.h"
#include "media/mp4.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/transformer_wan.h"
#include "ops/ops.h"
#include "pipelines/registry.h"

namespace fs = std::filesystem;

namespace vgen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The component's folder: `model/name` when model is a pipeline root, else model itself.
std::string component_dir(const std::string& model, const char* name) {
  const fs::path sub = fs::path(model) / name;
  return fs::exists(sub / "config.json") ? sub.string() : model;
}

// Median seconds of `iters` synchronized runs after `warmup` untimed ones.
double median_seconds(const std::function<void()>& run, Device device, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) run();
  ops::synchronize(device);
  std::vector<double> times;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    const auto t = Clock::now();
    run();
    ops::synchronize(device);
    times.push_back(seconds_since(t));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Random bf16-ish data on the device (never zeros: they can run faster than real data).
Tensor random_on(const Shape& shape, DType dtype, Device device, uint64_t seed) {
  return randn(shape, seed).to(dtype).to(device);
}

double peak_gib(Device device) { return allocator_for(device).peak_bytes() / double(1ull << 30); }
void reset_peak(Device device) { allocator_for(device).reset_peak(); }

void emit(nlohmann::json j) { std::printf("%s\n", j.dump().c_str()); std::fflush(stdout); }

}  // namespace

int run_bench(const BenchArgs& a) {
  const Device device = resolve_device(a.device);
  const DType dtype = a.dtype.empty() ? default_pipeline_options(device).dtype : parse_compute_dtype(a.dtype);
  ExecutionSettings settings = ExecutionSettings::from_environment();
  settings.attention_backend = a.attention_backend;
  settings.conv_autotune = settings.conv_autotune || a.conv_autotune;
  ExecutionContext context(device, settings);
  const ContextScope scope(context);
  nlohmann::json out = {{"what", "vgen_" + a.what}, {"device", device.str()}, {"dtype", dtype_name(dtype)}};

  if (a.what == "attention") {
    // The transformer's layout: [B, S, H, D] buffers seen as [B, H, S, D].
    const Shape bshd{1, a.seq, a.heads, a.head_dim};
    const Tensor q = random_on(bshd, dtype, device, 1).permute({0, 2, 1, 3});
    const Tensor k = random_on(bshd, dtype, device, 2).permute({0, 2, 1, 3});
    const Tensor v = random_on(bshd, dtype, device, 3).permute({0, 2, 1, 3});
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
    const double s = median_seconds([&] { (void)ops::attention(q, k, v, {}, scale); }, device, a.warmup, a.iters);
    const double flops = 4.0 * a.heads * double(a.seq) * double(a.seq) * a.head_dim;
    out.update({{"S", a.seq}, {"H", a.heads}, {"D", a.head_dim}, {"s", s}, {"tflops", flops / s / 1e12},
                {"backend", context.settings().attention_backend}});
  } else if (a.what == "transformer") {
    auto model = WanTransformer3DModel::from_pretrained(component_dir(a.model, "transformer"), dtype, device);
    model->enable_cuda_graphs(a.cuda_graphs && device.is_cuda());
    const auto& c = model->config();
    const int64_t lt = (a.num_frames - 1) / 4 + 1;
    Tensor x = random_on({1, c.in_channels, lt, a.height / 8, a.width / 8}, dtype, device, 4);
    Tensor t = Tensor::full({1}, 999.0f);
    Tensor ctx = random_on({1, a.text_len, c.text_dim}, dtype, device, 5);
    if (!a.inputs.empty()) {
      const WeightStore in = WeightStore::open_files({a.inputs});
      x = in.get("hidden_states").to(dtype).to(device);
      t = in.get("timestep").to(DType::F32);
      ctx = in.get("encoder_hidden_states").to(dtype).to(device);
    }
    if (!a.save_output.empty()) {
      const Tensor y = model->forward(x, t, ctx).to(Device::cpu()).to(DType::F32).contiguous();
      std::FILE* f = std::fopen(a.save_output.c_str(), "wb");
      VGEN_CHECK(f != nullptr, "bench: cannot write '{}'", a.save_output);
      const size_t n = std::fwrite(y.raw_data(), 1, y.nbytes(), f);
      std::fclose(f);
      VGEN_CHECK(n == y.nbytes(), "bench: short write to '{}'", a.save_output);
    }
    reset_peak(device);
    const double s = median_seconds([&] { (void)model->forward(x, t, ctx); }, device, a.warmup, a.iters);
    const int64_t tokens = lt * (a.height / 16) * (a.width / 16);
    out.update({{"h", a.height}, {"w", a.width}, {"frames", a.num_frames}, {"tokens", tokens}, {"s", s},
                {"peak_gib", peak_gib(device)}, {"attention", context.settings().attention_backend},
                {"cuda_graph_replays", model->graphed_step().replays()}});
  } else if (a.what == "vae") {
    const DType vdt = parse_compute_dtype(a.vae_dtype);
    auto vae = AutoencoderKLWan::from_pretrained(component_dir(a.model, "vae"), vdt, device);
    const int64_t lt = (a.num_frames - 1) / 4 + 1;
    const Tensor z = random_on({1, vae->config().z_dim, lt, a.height / 8, a.width / 8}, vdt, device, 6);
    reset_peak(device);
    // The first decode alone too: it builds (and with --conv-autotune times) the cuDNN plans.
    const double first_s = median_seconds([&] { (void)vae->decode(z); }, device, 0, 1);
    const double s = median_seconds([&] { (void)vae->decode(z); }, device, std::max(a.warmup - 1, 0), a.iters);
    out.update({{"h", a.height}, {"w", a.width}, {"frames", a.num_frames}, {"s", s}, {"first_s", first_s},
                {"peak_gib", peak_gib(device)}, {"dtype", dtype_name(vdt)}, {"conv_autotune", a.conv_autotune}});
  } else if (a.what == "pipeline") {
    PipelineOptions o = default_pipeline_options(device);
    o.dtype = dtype;
    o.vae_dtype = parse_compute_dtype(a.vae_dtype);
    o.cuda_graphs = a.cuda_graphs;
    o.offload_text_encoder = a.offload_text_encoder;
    const auto t_load = Clock::now();
    std::unique_ptr<DiffusionPipeline> pipe = load_pipeline(a.model, o);
    const double load_s = seconds_since(t_load);
    GenerationParams p;
    p.prompt = a.prompt;
    p.height = a.height;
    p.width = a.width;
    p.num_frames = a.num_frames;
    p.guidance_scale = 5.0;
    p.num_inference_steps = std::max(a.warmup, 1);
    (void)pipe->generate(p);  // warm-up, as diffusers' driver does
    ops::synchronize(device);
    reset_peak(device);
    p.num_inference_steps = a.steps;
    p.seed = 42;
    const auto t = Clock::now();
    const GenerationOutput g = pipe->generate(p);
    double pipeline_s = seconds_since(t);
    // With offload_text_encoder the warm-up freed the encoder and this run reloaded it; a
    // one-shot `vgen generate` loads it once with the rest, so that reload is reported apart.
    double reload_s = 0.0;
    for (const auto& [name, s] : g.timings)
      if (name == "load_text_encoder") reload_s = s;
    pipeline_s -= reload_s;
    double write_s = 0.0;
    if (!a.output.empty()) {
      const auto tw = Clock::now();
      media::VideoEncodeOptions enc;
      enc.fps = g.fps;
      media::write_mp4(a.output, g.frames, enc);
      write_s = seconds_since(tw);
    }
    nlohmann::json phases;
    for (const auto& [name, s] : g.timings) phases[name] = s;
    out.update({{"h", a.height}, {"w", a.width}, {"frames", a.num_frames}, {"steps", a.steps}, {"load_s", load_s},
                {"pipeline_s", pipeline_s}, {"write_s", write_s}, {"s", pipeline_s + write_s}, {"phases", phases},
                {"peak_gib", peak_gib(device)}, {"vae_dtype", a.vae_dtype}, {"cuda_graphs", a.cuda_graphs},
                {"conv_autotune", a.conv_autotune},
                {"offload_text_encoder", a.offload_text_encoder}, {"text_encoder_reload_s", reload_s}});
  } else {
    fail("bench: unknown benchmark '{}' (attention, transformer, vae, pipeline)", a.what);
  }
  emit(out);
  return 0;
}

}  // namespace vgen::cli
