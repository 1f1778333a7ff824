#include "cli/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/error.h"
#include "core/random.h"
#include "io/config_reader.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "media/mp4.h"
#include "ops/ops.h"
#include "pipelines/registry.h"
#ifdef VGEN_WITH_CUDA
#include "backends/cuda/attention.h"
#endif

namespace vgen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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

// The pipeline options of a benchmark: device, dtypes, and the execution flags over the environment's.
PipelineOptions bench_options(const BenchArgs& a, Device device, DType dtype) {
  PipelineOptions o = default_pipeline_options(device);
  o.dtype = dtype;
  if (!a.vae_dtype.empty()) o.vae_dtype = parse_compute_dtype(a.vae_dtype);
  o.vae_chunk_frames = a.vae_chunk_frames;
  o.offload_text_encoder = a.offload_text_encoder;
  o.offload_idle_expert = a.offload_idle_expert;
  if (a.attention_backend) o.execution.attention_backend = *a.attention_backend;
  o.execution.cuda_graphs = a.cuda_graphs;
  if (a.conv_autotune) o.execution.conv_autotune = true;
  if (!a.gemm_autotune) o.execution.gemm_autotune = false;
  for (const std::string& spec : a.lora) o.lora.push_back(nn::parse_lora_adapter_spec(spec));
  if (!a.quant_algo.empty()) o.quant.quant_algo = parse_quant_algo(a.quant_algo, "--quant-algo");
  if (a.quant_static && !o.quant.enabled()) fail("--quant-static needs --quant-algo");
  if ((a.quant_fast_accum || a.quant_no_fast_accum) && !quant_fast_accum_applies(o.quant.quant_algo))
    fail("--{}quant-fast-accum needs --quant-algo FP8 or FP8_BLOCK_SCALES", a.quant_no_fast_accum ? "no-" : "");
  o.quant.dynamic = !a.quant_static;
  if (a.quant_fast_accum && a.quant_no_fast_accum) fail("--quant-fast-accum and --no-quant-fast-accum: give one of them");
  if (a.quant_fast_accum) o.quant.fast_accum = true;
  if (a.quant_no_fast_accum) o.quant.fast_accum = false;
  return o;
}

}  // namespace

int run_bench(const BenchArgs& a) {
  const Device device = resolve_device(a.device);
  const DType dtype = a.dtype.empty() ? default_pipeline_options(device).dtype : parse_compute_dtype(a.dtype);
  const PipelineOptions options = bench_options(a, device, dtype);
  nlohmann::json out = {{"what", "vgen_" + a.what}, {"device", device.str()}, {"dtype", dtype_name(dtype)}};

  if (a.what == "attention") {
    const std::shared_ptr<ExecutionContext> context = make_pipeline_context(options);
    ContextScope scope(*context);
    // The transformer's layout: [B, S, H, D] buffers seen as [B, H, S, D].
    const int64_t kv_seq = a.kv_seq > 0 ? a.kv_seq : a.seq;
    const Shape bshd{1, a.seq, a.heads, a.head_dim}, kv_bshd{1, kv_seq, a.heads, a.head_dim};
    const Tensor q = random_on(bshd, dtype, device, 1).permute({0, 2, 1, 3});
    const Tensor k = random_on(kv_bshd, dtype, device, 2).permute({0, 2, 1, 3});
    const Tensor v = random_on(kv_bshd, dtype, device, 3).permute({0, 2, 1, 3});
    const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
    const double s = median_seconds([&] { (void)ops::attention(q, k, v, {}, scale); }, device, a.warmup, a.iters);
    const double flops = 4.0 * a.heads * double(a.seq) * double(kv_seq) * a.head_dim;
    std::string kernel = backend_for(device).attention_kernel();  // the kernel these inputs ran
#ifdef VGEN_WITH_CUDA
    if (device.is_cuda()) kernel = cuda::attention_path(q, k, v, {}, scale);
#endif
    // The error against float32 attention over the first query rows (the reference's scores
    // fit in memory), with the kernel that ran above.
    const int64_t rows = std::min<int64_t>(a.seq, 256);
    const Tensor qs = q.narrow(2, 0, rows);
    const Tensor got = ops::attention(qs, k, v, {}, scale).to(DType::F32);
    const Tensor want = ops::attention(qs.to(DType::F32), k.to(DType::F32), v.to(DType::F32), {}, scale);
    const double num = ops::sum_abs(ops::mul(ops::sub(got, want), ops::sub(got, want)));
    const double den = ops::sum_abs(ops::mul(want, want));
    out.update({{"S", a.seq}, {"S_kv", kv_seq}, {"H", a.heads}, {"D", a.head_dim}, {"s", s}, {"tflops", flops / s / 1e12},
                {"backend", kernel}, {"rel_l2_vs_f32", den > 0 ? std::sqrt(num / den) : 0.0}, {"error_rows", rows}});
  } else if (a.what == "transformer" || a.what == "vae" || a.what == "image_encoder") {
    ComponentBenchOptions co;
    co.pipeline = options;
    co.height = a.height;
    co.width = a.width;
    co.num_frames = a.num_frames;
    co.text_len = a.text_len;
    co.inputs = a.inputs;
    co.save_output = a.save_output;
    co.encode = a.encode;
    co.vae_scale_factor_spatial = a.vae_scale_factor_spatial;
    const ComponentBench bench = load_component_bench(a.model, a.what, co);
    ContextScope scope(*bench.context);
    reset_peak(device);
    out.update(bench.facts);
    if (a.what == "vae") {
      // The first decode alone too: it builds (and with --conv-autotune times) the cuDNN plans.
      const double first_s = median_seconds(bench.run, device, 0, 1);
      const double s = median_seconds(bench.run, device, std::max(a.warmup - 1, 0), a.iters);
      out.update({{"s", s}, {"first_s", first_s}, {"peak_gib", peak_gib(device)},
                  {"conv_autotune", bench.context->settings().conv_autotune}});
    } else {
      const double s = median_seconds(bench.run, device, a.warmup, a.iters);
      out.update({{"s", s}, {"peak_gib", peak_gib(device)}, {"attention", backend_for(device).attention_kernel()},
                  {"gemm_autotune", bench.context->settings().gemm_autotune}});
    }
    out.update(bench.after());
  } else if (a.what == "pipeline") {
    if (const std::string why = media::mp4_writer_problem(); a.output.ends_with(".mp4") && !why.empty())
      fail("--output {}: {}", a.output, why);
    const auto t_load = Clock::now();
    std::unique_ptr<DiffusionPipeline> pipe = load_pipeline(a.model, options);
    const double load_s = seconds_since(t_load);
    const PipelineCapabilities& caps = pipe->capabilities();
    GenerationParams p;
    p.prompt = a.prompt;
    p.height = a.height;
    p.width = a.width;
    p.num_frames = a.num_frames;
    p.guidance_scale = a.guidance_scale.value_or(caps.default_guidance_scale);
    p.num_inference_steps = std::max(a.warmup, 1);
    if (!a.image.empty()) p.image = media::read_image(a.image);
    if (caps.two_experts) p.guidance_scale_2 = caps.default_guidance_scale_2;
    (void)pipe->generate(pipe->resolve(p));  // warm-up, as diffusers' driver does
    ops::synchronize(device);
    reset_peak(device);
    p.num_inference_steps = a.steps;
    p.seed = 42;
    if (!a.latents.empty()) p.latents = WeightStore::open_files({a.latents}).get("latents").to(DType::F32);
    // Each --cache-config after the first: its own timed run, reported in "runs".
    const auto cache_of = [&](const std::string& file) -> std::optional<CacheConfig> {
      if (file == "none") return CacheConfig{};
      const Json j = read_json_file(file);
      return read_cache_config(ConfigReader(j, file, "cache_config"));
    };
    const auto latents_file = [&](size_t i) {
      if (a.cache_config.size() <= 1) return a.save_latents;
      const std::string::size_type dot = a.save_latents.rfind('.');
      return dot == std::string::npos ? a.save_latents + "." + std::to_string(i)
                                      : a.save_latents.substr(0, dot) + "." + std::to_string(i) + a.save_latents.substr(dot);
    };
    nlohmann::json runs = nlohmann::json::array();
    for (size_t i = 1; i < a.cache_config.size(); ++i) {
      GenerationParams q = p;
      q.cache = cache_of(a.cache_config[i]);
      const ResolvedParams rq = pipe->resolve(q);
      const auto tq = Clock::now();
      const GenerationOutput gq = pipe->generate(rq);
      nlohmann::json run = {{"cache_config", a.cache_config[i]}, {"pipeline_s", seconds_since(tq)}};
      if (gq.cache.enabled())
        run["cache"] = {{"backend", gq.cache.backend}, {"computed", gq.cache.computed()},
                        {"skipped", gq.cache.skipped()}, {"summary", gq.cache.summary()}};
      if (!a.save_latents.empty())
        save_safetensors(latents_file(i), {{"denoised_latents", gq.denoised_latents.to(Device::cpu()).to(DType::F32)},
                                           {"frames", gq.frames.to(Device::cpu())}});
      runs.push_back(run);
    }
    if (!a.cache_config.empty()) p.cache = cache_of(a.cache_config.front());
    const ResolvedParams r = pipe->resolve(p);
    // Where the peak memory is reached: the peak so far after the first denoising step (the
    // prompt encoding and one step) and after the last (the whole denoising loop); the run's
    // peak is reported below.
    nlohmann::json peak_by_phase;
    const StepCallback track_peak = [&](const StepProgress& s) {
      // The allocator counts when work is queued, so no synchronization is needed.
      if (s.step == 1 || s.step == s.total) peak_by_phase[s.step == 1 ? "first_step" : "denoise"] = peak_gib(device);
      return true;
    };
    const auto t = Clock::now();
    const GenerationOutput g = pipe->generate(r, track_peak);
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
      const bool still = a.output.size() > 4 && a.output.substr(a.output.size() - 4) != ".mp4";
      if (still) {  // an image model's PNG / JPEG / WebP (the first frame)
        media::write_image(a.output, g.frames.select(0, 0));
      } else {
        media::VideoEncodeOptions enc;
        enc.fps = g.fps;
        media::write_mp4(a.output, g.frames, enc);
      }
      write_s = seconds_since(tw);
    }
    if (!runs.empty()) out["runs"] = runs;
    if (!a.save_latents.empty())
      save_safetensors(latents_file(0), {{"denoised_latents", g.denoised_latents.to(Device::cpu()).to(DType::F32)},
                                        {"frames", g.frames.to(Device::cpu())}});
    if (g.cache.enabled())
      out["cache"] = {{"backend", g.cache.backend}, {"computed", g.cache.computed()}, {"skipped", g.cache.skipped()},
                      {"summary", g.cache.summary()}};
    nlohmann::json phases;
    for (const auto& [name, s] : g.timings) phases[name] = s;
    const ExecutionSettings& settings = pipe->context().settings();
    out.update({{"h", r.height}, {"w", r.width}, {"frames", r.num_frames}, {"steps", r.num_inference_steps},
                {"load_s", load_s}, {"pipeline_s", pipeline_s}, {"write_s", write_s}, {"s", pipeline_s + write_s},
                {"phases", phases}, {"peak_gib", peak_gib(device)}, {"peak_gib_by_phase", peak_by_phase}, {"vae_dtype", a.vae_dtype.empty() ? "family default" : a.vae_dtype},
                {"cuda_graphs", settings.cuda_graphs}, {"conv_autotune", settings.conv_autotune},
                {"gemm_autotune", settings.gemm_autotune}, {"quant_fast_accum", options.quant.fast_accum_on()},
                {"guidance_scale", r.guidance_scale}, {"lora", a.lora},
                {"offload_text_encoder", a.offload_text_encoder}, {"offload_idle_expert", a.offload_idle_expert}, {"text_encoder_reload_s", reload_s}});
  } else {
    fail("bench: unknown benchmark '{}' (attention, transformer, vae, image_encoder, pipeline)", a.what);
  }
  emit(out);
  return 0;
}

}  // namespace vgen::cli
