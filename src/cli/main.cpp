// vgen: command-line entry point (generate, info, serve).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <tuple>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/cfg/env.h>

#include "api/model_path.h"
#include "api/visual_gen.h"
#include "config/cache_config.h"
#include "cli/batching.h"
#include "cli/bench.h"
#include "cli/flags.h"
#include "cli/launch.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "config/engine_config.h"
#include "core/allocator.h"
#include "core/communicator.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "media/metadata.h"
#include "media/mp4.h"
#include "nn/lora.h"
#include "nn/quant.h"
#include "pipelines/registry.h"
#include "serving/server.h"

namespace fs = std::filesystem;
using namespace vgen;

namespace {

struct GenerateArgs {
  std::string model;
  std::string output = "output.mp4";
  std::string latents_file;
  std::string image_file, last_image_file;
  std::string device = "auto";
  std::string dtype;
  std::string vae_dtype;  // empty: the model family's default
  int64_t vae_chunk_frames = 1;
  std::optional<std::string> attention_backend;  // unset: the environment's (VGEN_ATTENTION_BACKEND) or auto
  bool cuda_graphs = true;
  bool conv_autotune = false;
  bool gemm_autotune = true;
  bool offload_idle_expert = false;
  std::vector<std::string> lora, lora_2;  // FILE or FILE:SCALE
  bool lora_ignore_unmatched = false;
  std::optional<std::string> quant_algo, linear_type;  // --quant-algo / --linear-type (one of them)
  bool quant_static = false;
  bool quant_fast_accum = false, quant_no_fast_accum = false;
  std::vector<std::string> quant_ignore;
  std::optional<std::string> scheduler;
  std::optional<double> flow_shift;
  std::optional<double> fps;
  std::optional<std::string> timesteps_text, sigmas_text;  // parsed by cli::parse_number_list
  bool quiet = false;
  GenerationParams params;
  std::optional<std::string> negative_prompt;
  int crf = 18;
  std::string preset = "medium";
  int quality = 90;
  std::vector<std::string> prompts;
  std::string prompts_file;
  int num_videos_per_prompt = 1;
  std::string batch_size_text = "1";  // 1..64, or auto (cli::auto_batch_size)
  std::string seed_text = "0";  // parsed by cli::parse_seed: -1 draws a random seed
  // Step caching (--cache-*): config/cache_config.h.
  std::optional<std::string> cache_backend;
  std::optional<double> cache_threshold, cache_retention_ratio;
  std::optional<bool> cache_use_ret_steps;
  std::optional<int> cache_max_skip_steps, cache_max_continuous;
  std::optional<std::string> cache_coefficients, cache_coefficients_2, cache_mag_ratios;
  // TaylorSeer's fields.
  std::optional<int> cache_interval, cache_disable_before, cache_disable_after, cache_max_order;
  std::optional<std::string> cache_factors_dtype;
  std::optional<bool> cache_lite_mode;
  // Several GPUs (or CPU threads): cfg_size x ulysses_size x ring_size ranks.
  ParallelSizes parallel;
  bool parallel_vae = false;
};

// The --cache-* flags as a CacheConfig (nullopt without --cache-backend); a problem names the flag.
std::optional<CacheConfig> cache_from_flags(const GenerateArgs& a) {
  const bool other = a.cache_threshold || a.cache_retention_ratio || a.cache_use_ret_steps || a.cache_max_skip_steps ||
                     a.cache_max_continuous || a.cache_coefficients || a.cache_coefficients_2 || a.cache_mag_ratios ||
                     a.cache_interval || a.cache_disable_before || a.cache_disable_after || a.cache_max_order ||
                     a.cache_factors_dtype || a.cache_lite_mode;
  if (!a.cache_backend) {
    if (other) fail("the --cache-* options need --cache-backend ({})", cache_backend_choices());
    return std::nullopt;
  }
  CacheConfig c;
  const std::optional<CacheBackend> backend = parse_cache_backend(*a.cache_backend);
  if (!backend) fail("--cache-backend: '{}' is not one of {}", *a.cache_backend, cache_backend_choices());
  c.cache_backend = *backend;
  if (a.cache_threshold) {
    if (c.cache_backend == CacheBackend::TeaCache) c.teacache_thresh = *a.cache_threshold;
    else c.threshold = *a.cache_threshold;
  }
  if (a.cache_use_ret_steps) c.use_ret_steps = *a.cache_use_ret_steps;
  if (a.cache_retention_ratio) c.retention_ratio = *a.cache_retention_ratio;
  if (a.cache_max_skip_steps) c.max_skip_steps = *a.cache_max_skip_steps;
  if (a.cache_max_continuous) c.max_continuous_cached_steps = *a.cache_max_continuous;
  if (a.cache_coefficients) c.coefficients = cli::parse_number_list(*a.cache_coefficients, "--cache-coefficients");
  if (a.cache_coefficients_2) c.coefficients_2 = cli::parse_number_list(*a.cache_coefficients_2, "--cache-coefficients-2");
  if (a.cache_mag_ratios) c.mag_ratios = cli::parse_number_list(*a.cache_mag_ratios, "--cache-mag-ratios");
  if (a.cache_interval) c.cache_interval = *a.cache_interval;
  if (a.cache_disable_before) c.disable_cache_before_step = *a.cache_disable_before;
  if (a.cache_disable_after) c.disable_cache_after_step = *a.cache_disable_after;
  if (a.cache_max_order) c.max_order = *a.cache_max_order;
  if (a.cache_factors_dtype) {
    const std::optional<DType> dtype = parse_taylor_factors_dtype(*a.cache_factors_dtype);
    if (!dtype) fail("--cache-factors-dtype: '{}' is not one of bfloat16, float16, float32", *a.cache_factors_dtype);
    c.taylor_factors_dtype = *dtype;
  }
  if (a.cache_lite_mode) c.use_lite_mode = *a.cache_lite_mode;
  // The flag of each CacheConfig field, for errors.
  static const std::map<std::string, std::string> kFlags = {
      {"teacache_thresh", "--cache-threshold"},       {"threshold", "--cache-threshold"},
      {"use_ret_steps", "--cache-use-ret-steps"},     {"coefficients", "--cache-coefficients"},
      {"coefficients_2", "--cache-coefficients-2"},   {"max_skip_steps", "--cache-max-skip-steps"},
      {"retention_ratio", "--cache-retention-ratio"}, {"mag_ratios", "--cache-mag-ratios"},
      {"max_continuous_cached_steps", "--cache-max-continuous"},
      {"cache_interval", "--cache-interval"},
      {"disable_cache_before_step", "--cache-disable-before"},
      {"disable_cache_after_step", "--cache-disable-after"},
      {"max_order", "--cache-max-order"},
      {"taylor_factors_dtype", "--cache-factors-dtype"},
      {"use_lite_mode", "--cache-lite-mode"}};
  // A field of another backend would be ignored: refuse it (cache_fields_of_one_backend; the
  // threshold flag sets whichever threshold the chosen backend reads).
  const std::map<std::string, bool> given = {
      {"use_ret_steps", a.cache_use_ret_steps.has_value()},   {"max_skip_steps", a.cache_max_skip_steps.has_value()},
      {"retention_ratio", a.cache_retention_ratio.has_value()}, {"cache_interval", a.cache_interval.has_value()},
      {"disable_cache_before_step", a.cache_disable_before.has_value()},
      {"max_order", a.cache_max_order.has_value()},           {"taylor_factors_dtype", a.cache_factors_dtype.has_value()}};
  for (const auto& [field, backend] : cache_fields_of_one_backend()) {
    const auto it = given.find(field);
    if (it != given.end() && it->second && c.cache_backend != backend)
      fail("{}: applies to --cache-backend {} only", kFlags.at(field), cache_backend_name(backend));
  }
  if (c.cache_backend == CacheBackend::None && other)
    fail("the --cache-* options have no effect with --cache-backend none");
  if (const auto p = c.problem()) {
    const auto it = kFlags.find(p->first);
    fail("{}: {} ({})", it == kFlags.end() ? p->first : it->second, p->second, p->first);
  }
  return c;
}

Tensor read_latents(const std::string& path) {
  const WeightStore store = WeightStore::open_files({path});
  const std::vector<std::string> names = store.names();
  if (store.contains("latents")) return store.get("latents").to(DType::F32);
  if (names.size() == 1) return store.get(names[0]).to(DType::F32);
  fail("{}: expected a tensor named 'latents' (or exactly one tensor), found {}", path, names.size());
}

// --batch-size: 1..64 or auto (0).
int parse_batch_size(const std::string& text) {
  if (text == "auto") return 0;
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || used == 0 || value < 1 || value > 64)
    fail("--batch-size: must be 1 to 64 or auto, got {}", text);
  return value;
}

CLI::Validator batch_size_flag() {
  return CLI::Validator(
      [](std::string& text) {
        try {
          parse_batch_size(text);
          return std::string();
        } catch (const Error&) {
          return fmt::format("must be 1 to 64 or auto, got {}", text);
        }
      },
      "1..64|auto");
}

// Bytes of the checkpoint's files (what loading reads, for its ETA); 0 when the model does not
// resolve (loading then reports why).
double checkpoint_bytes(const std::string& model) {
  try {
    double bytes = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(resolve_model_path(model), ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file(ec)) bytes += static_cast<double>(it->file_size(ec));
    return bytes;
  } catch (const std::exception&) {
    return 0;
  }
}

// The prompts of a run: every --prompt, then the lines of --prompts-file (blank lines skipped).
std::vector<std::string> collect_prompts(const GenerateArgs& a) {
  std::vector<std::string> prompts = a.prompts;
  if (!a.prompts_file.empty()) {
    std::ifstream in(a.prompts_file);
    if (!in) fail("--prompts-file {}: cannot open it", a.prompts_file);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
    }
    if (prompts.size() == a.prompts.size()) fail("--prompts-file {}: no prompts in it (one per line)", a.prompts_file);
  }
  if (prompts.empty()) fail("no prompt: give --prompt TEXT (once or more) or --prompts-file FILE");
  return prompts;
}

void write_output(const GenerateArgs& a, const cli::OutputTarget& target, const Tensor& frames, double fps,
                  const media::Metadata& metadata) {
  if (target.kind == cli::OutputKind::Mp4) {
    media::VideoEncodeOptions enc;
    enc.fps = fps;
    enc.crf = a.crf;
    enc.preset = a.preset;
    enc.metadata = metadata;
    media::write_mp4(target.path, frames, enc);
  } else if (target.kind == cli::OutputKind::Image) {
    media::write_image(target.path, frames.select(0, 0), a.quality, metadata);
  } else {
    cli::prepare_output(target);
    for (int64_t i = 0; i < frames.size(0); ++i) {
      media::Metadata frame_metadata = metadata;
      frame_metadata.emplace_back("frame", std::to_string(i));
      media::write_png(cli::frame_path(target, i), frames.select(0, i), frame_metadata);
    }
  }
}

int run_generate_rank(const GenerateArgs& a, const PipelineOptions& options, const std::vector<std::string>& prompts,
                      const cli::OutputTarget& target, std::optional<uint64_t> seed, bool random,
                      std::chrono::steady_clock::time_point t0, bool main_rank);

int run_generate(GenerateArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  // Everything that can be checked without the model is checked before loading it.
  const std::vector<std::string> prompts = collect_prompts(a);
  const int per_prompt = a.num_videos_per_prompt;
  const int total = static_cast<int>(prompts.size()) * per_prompt;
  const cli::OutputTarget target = cli::plan_output(a.output);
  std::optional<uint64_t> seed = cli::parse_seed(a.seed_text);
  const bool random = !seed.has_value();
  if (random) seed = random_seed();

  PipelineOptions options = default_pipeline_options(resolve_device(a.device));
  if (!a.dtype.empty()) options.dtype = parse_compute_dtype(a.dtype);
  if (!a.vae_dtype.empty()) options.vae_dtype = parse_compute_dtype(a.vae_dtype);
  options.vae_chunk_frames = a.vae_chunk_frames;
  // One generation: the text encoder's memory goes to the transformer and VAE. Several keep
  // it rather than reload it for each video.
  options.offload_text_encoder = total == 1;
  options.offload_idle_expert = a.offload_idle_expert;
  // PipelineOptions starts from ExecutionSettings::from_environment(); the flags override it.
  if (a.attention_backend) options.execution.attention_backend = *a.attention_backend;
  options.execution.cuda_graphs = a.cuda_graphs;
  if (a.conv_autotune) options.execution.conv_autotune = true;
  if (!a.gemm_autotune) options.execution.gemm_autotune = false;
  if (!a.attention_backend) ExecutionSettings::check_environment();  // the flag is checked as it is parsed
  options.scheduler.scheduler = a.scheduler;
  options.scheduler.flow_shift = a.flow_shift;
  if (a.negative_prompt) a.params.negative_prompt = a.negative_prompt;
  if (a.timesteps_text) a.params.timesteps = cli::parse_number_list(*a.timesteps_text, "--timesteps");
  if (a.sigmas_text) a.params.sigmas = cli::parse_number_list(*a.sigmas_text, "--sigmas");
  a.params.cache = cache_from_flags(a);
  // LoRA files are read and their keys converted before the model loads: a bad file fails at once.
  for (const auto& [flag, texts, specs] : {std::tuple{"--lora", &a.lora, &options.lora},
                                           std::tuple{"--lora-2", &a.lora_2, &options.lora_2}})
    for (const std::string& text : *texts) {
      nn::LoraAdapterSpec spec = nn::parse_lora_adapter_spec(text);
      if (fs::is_directory(spec.path)) fail("{} {}: a directory, not a LoRA file", flag, spec.path);
      if (!fs::is_regular_file(spec.path)) fail("{} {}: no such file", flag, spec.path);
      nn::LoraSet({spec}, a.lora_ignore_unmatched);
      specs->push_back(std::move(spec));
    }
  options.lora_ignore_unmatched = a.lora_ignore_unmatched;
  if (a.quant_algo && a.linear_type) fail("--quant-algo and --linear-type name the same setting: give one of them");
  if (a.quant_algo) options.quant.quant_algo = parse_quant_algo(*a.quant_algo, "--quant-algo");
  if (a.linear_type) options.quant.quant_algo = parse_linear_type(*a.linear_type, "--linear-type");
  if ((a.quant_static || !a.quant_ignore.empty()) && !options.quant.enabled())
    fail("{} needs --quant-algo (or --linear-type) with a quantized format", a.quant_static ? "--quant-static" : "--quant-ignore");
  if ((a.quant_fast_accum || a.quant_no_fast_accum) && !quant_fast_accum_applies(options.quant.quant_algo))
    fail("--{}quant-fast-accum needs --quant-algo FP8 or FP8_BLOCK_SCALES (or their --linear-type), not {}",
         a.quant_no_fast_accum ? "no-" : "", quant_algo_name(options.quant.quant_algo));
  options.quant.dynamic = !a.quant_static;
  options.quant.ignore = a.quant_ignore;
  if (a.quant_fast_accum && a.quant_no_fast_accum) fail("--quant-fast-accum and --no-quant-fast-accum: give one of them");
  if (a.quant_fast_accum) options.quant.fast_accum = true;
  if (a.quant_no_fast_accum) options.quant.fast_accum = false;
  if (!a.latents_file.empty()) a.params.latents = read_latents(a.latents_file);
  // Images are decoded before the model loads: a file that does not decode fails at once.
  if (!a.image_file.empty()) a.params.image = media::read_image(a.image_file);
  if (!a.last_image_file.empty()) {
    if (a.image_file.empty()) fail("--last-image needs --image (the first frame) too");
    a.params.last_image = media::read_image(a.last_image_file);
  }

  // One rank, or every rank of a parallel run (threads on the CPU, one process per GPU under
  // `vgen launch`): each loads the pipeline and runs the same requests; rank 0 reports and writes.
  options.parallel_vae = a.parallel_vae;
  const int world = a.parallel.world_size();
  const std::optional<ProcessGroupEnv> env = ProcessGroupEnv::from_environment();
  if (world == 1 && (!env || env->world_size == 1)) return run_generate_rank(a, options, prompts, target, seed, random, t0, true);
  if (options.device.is_cpu()) {
    if (env && env->world_size > 1)
      fail("--device cpu runs the {} ranks as threads of this one process: run it without `vgen launch` (WORLD_SIZE={})",
           world, env->world_size);
    int status = 0;
    ThreadGroup::run(world, [&](int rank, const std::shared_ptr<Communicator>& comm) {
      PipelineOptions o = options;
      o.parallel = std::make_shared<ParallelLayout>(comm, a.parallel);
      const int rc = run_generate_rank(a, o, prompts, target, seed, random, t0, rank == 0);
      if (rank == 0) status = rc;
    });
    return status;
  }
  if (!env)
    fail("--cfg-size {} x --ulysses-size {} x --ring-size {} = {} GPUs: start one process per GPU with "
         "`vgen launch -n {} -- generate ...` (or torchrun-style RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)",
         a.parallel.cfg_size, a.parallel.ulysses_size, a.parallel.ring_size, world, world);
  if (env->world_size != world)
    fail("--cfg-size {} x --ulysses-size {} x --ring-size {} = {} ranks, but {} processes were started (WORLD_SIZE)",
         a.parallel.cfg_size, a.parallel.ulysses_size, a.parallel.ring_size, world, env->world_size);
  if (!device_available(DeviceType::CUDA))
    fail("{} GPU ranks: {}", world, device_unavailable_reason(DeviceType::CUDA));
  options.device = Device::cuda(env->local_rank);
  options.parallel =
      std::make_shared<ParallelLayout>(make_device_communicator(DeviceType::CUDA, *env, env->local_rank), a.parallel);
  return run_generate_rank(a, options, prompts, target, seed, random, t0, env->rank == 0);
}

int run_generate_rank(const GenerateArgs& a, const PipelineOptions& options, const std::vector<std::string>& prompts,
                      const cli::OutputTarget& target, std::optional<uint64_t> seed, bool random,
                      std::chrono::steady_clock::time_point t0, bool main_rank) {
  const int per_prompt = a.num_videos_per_prompt;
  const int total = static_cast<int>(prompts.size()) * per_prompt;
  // --batch-size auto: the first video alone, measuring its device memory; then as many at a
  // time as the memory left holds.
  // The ranks of a parallel run must run the same groups, so there auto (each rank's own memory
  // measure) stays at one video at a time.
  const bool auto_requested = a.batch_size_text == "auto";
  const bool auto_batch = auto_requested && !options.parallel;
  int batch_size = auto_requested ? 1 : std::min(parse_batch_size(a.batch_size_text), total);
  const auto phases_for = [](int videos, int batch) { return 4 * ((videos + batch - 1) / batch); };
  Progress progress(1 + phases_for(total, batch_size), !a.quiet && main_rank);
  // ETAs of the phases other than denoising: each phase's rate (seconds per byte loaded, prompt
  // encoded, pixel decoded or written) as last measured, in this run or the previous one.
  PhaseEstimator estimator;
  const std::string device_key = options.device.str();
  const double model_bytes = checkpoint_bytes(a.model);
  progress.begin(fmt::format("loading {} ({} {})", a.model, options.device.str(), dtype_name(options.dtype)), 0.0,
                 estimator.estimate("load|" + device_key, model_bytes));
  VisualGen gen(a.model, options);
  const std::string model_key = device_key + "|" + gen.model_path();  // encode, decode: per model
  // Every request is resolved (and so validated) before the first one runs.
  std::vector<ResolvedParams> requests;
  for (int k = 0; k < total; ++k) {
    GenerationParams p = a.params;
    p.prompt = prompts[static_cast<size_t>(k / per_prompt)];
    p.seed = *seed + static_cast<uint64_t>(k);  // video k: seed + k (mod 2^64)
    requests.push_back(gen.pipeline().resolve(p));
  }
  const ResolvedParams& first = requests.front();
  if (target.kind == cli::OutputKind::Image && first.num_frames != 1)
    fail("--output {}: an image output needs --num-frames 1 (got {})", a.output, first.num_frames);
  const double load_s = progress.end();
  estimator.record("load|" + device_key, model_bytes, load_s);
  if (!a.quiet && main_rank) {
    // With --latents the noise is the file's (every video's), and the seeds draw nothing.
    const std::string noise =
        a.latents_file.empty()
            ? fmt::format("seed {}{}{}", first.seed, random ? " (random)" : "",
                          total > 1 ? fmt::format("; {} videos, seeds {} to {}", total, first.seed, requests.back().seed)
                                    : "")
            : fmt::format("latents from {}{}", a.latents_file, total > 1 ? fmt::format("; {} videos", total) : "");
    std::fprintf(stderr, "vgen: %s on %s (%s), %lldx%lld, %lld frames, %d steps, guidance %.2f, %s\n",
                 gen.pipeline().class_name().c_str(), options.device.str().c_str(),
                 std::string(dtype_name(options.dtype)).c_str(), static_cast<long long>(first.width),
                 static_cast<long long>(first.height), static_cast<long long>(first.num_frames),
                 first.num_inference_steps, first.guidance_scale, noise.c_str());
  }
  // The seed is part of the result: print it even with --quiet when it was drawn.
  if (random && a.quiet && main_rank && a.latents_file.empty()) std::fprintf(stderr, "vgen: random seed %llu\n", static_cast<unsigned long long>(first.seed));

  std::vector<std::pair<std::string, double>> timings;
  const auto add_timing = [&](const std::string& phase, double s) {
    for (auto& [name, sum] : timings)
      if (name == phase) {
        sum += s;
        return;
      }
    timings.emplace_back(phase, s);
  };
  std::vector<std::string> written;
  std::vector<std::string> cache_summaries;  // one per group that ran a step cache
  for (int k = 0; k < total && main_rank; ++k) {
    const ResolvedParams& r = requests[static_cast<size_t>(k)];
    const auto warn_if_truncated = [&](const std::string& text, const char* which) {
      const std::optional<int64_t> tokens = gen.prompt_token_count(text);
      if (tokens && *tokens > r.max_sequence_length)
        progress.note(fmt::format("warning: the {} is {} tokens long; only the first {} are used (--max-sequence-length)",
                                  which, *tokens, r.max_sequence_length));
    };
    if (k % per_prompt == 0) warn_if_truncated(r.prompt, k == 0 ? "prompt" : fmt::format("prompt {}", k / per_prompt + 1).c_str());
    if (k == 0 && r.guidance_scale > 1.0) warn_if_truncated(r.negative_prompt, "negative prompt");
  }
  // --batch-size videos at a time through the transformer.
  size_t memory_before = 0;
  if (auto_batch) {
    allocator_for(options.device).reset_peak();
    memory_before = allocator_for(options.device).allocated_bytes();
  }
  for (int k0 = 0, k1 = 0; k0 < total; k0 = k1) {
    k1 = std::min(total, k0 + batch_size);
    const std::vector<ResolvedParams> group(requests.begin() + k0, requests.begin() + k1);
    const std::string of = total == 1        ? ""
                           : k1 - k0 == 1    ? fmt::format(" (video {}/{})", k0 + 1, total)
                                             : fmt::format(" (videos {}-{}/{})", k0 + 1, k1, total);
    const bool with_image = requests[static_cast<size_t>(k0)].image.defined();
    const std::string encode_key = (with_image ? "encode_image|" : "encode|") + model_key;
    const double pixels = static_cast<double>(k1 - k0) * static_cast<double>(first.num_frames) *
                          static_cast<double>(first.height * first.width);
    progress.begin(std::string(k1 - k0 == 1 ? "encoding the prompt" : "encoding the prompts") +
                       (with_image ? " and the image" : "") + of,
                   0.0, estimator.estimate(encode_key, k1 - k0));
    // The pipeline reports denoising steps only: the first step ends the encoding phase, the
    // last one starts the decoding phase.
    auto encode_start = std::chrono::steady_clock::now();
    const bool two_experts = gen.pipeline().capabilities().two_experts;
    int expert = 0;
    std::vector<GenerationOutput> outs = gen.generate_batch(group, batch_size, [&](const StepProgress& p) {
      if (p.step == 1) {
        const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - encode_start).count();
        estimator.record(encode_key, k1 - k0, progress.end(std::max(0.0, since - p.step_seconds)));
        progress.begin("denoising" + of, p.step_seconds);
        progress.start_steps(p.total);
      }
      progress.step(p.step, p.step_seconds);
      // Two experts: say where the low-noise one took over.
      if (two_experts && !a.quiet && main_rank && p.expert != expert)
        progress.note(fmt::format("step {}: the low-noise expert (transformer_2) took over", p.step));
      expert = p.expert;
      if (p.step == p.total) progress.begin("decoding (VAE)" + of, 0.0, estimator.estimate("decode|" + model_key, pixels));
      return true;
    });
    estimator.record("decode|" + model_key, pixels, progress.end());
    for (const auto& [phase, s] : outs.front().timings) add_timing(phase, s);
    if (outs.front().cache.enabled()) cache_summaries.push_back(outs.front().cache.summary() + of);

    const std::string write_key = "write|" + std::string(target.kind == cli::OutputKind::Mp4 ? "mp4" : target.kind == cli::OutputKind::Image ? "image" : "png");
    progress.begin("writing" + of, 0.0, estimator.estimate(write_key, pixels));
    for (int k = k0; k < k1 && main_rank; ++k) {
      const GenerationOutput& out = outs[static_cast<size_t>(k - k0)];
      const cli::OutputTarget out_target = cli::output_for_video(target, k, total);
      const double fps = a.fps.value_or(out.fps);
      write_output(a, out_target, out.frames, fps, gen.metadata(requests[static_cast<size_t>(k)], fps));
      written.push_back(out_target.path);
    }
    const double write_s = progress.end();
    estimator.record(write_key, pixels, write_s);
    add_timing("write", write_s);
    if (auto_batch && k0 == 0 && k1 < total) {
      const Allocator& memory = allocator_for(options.device);
      const size_t per_video = memory.peak_bytes() > memory_before ? memory.peak_bytes() - memory_before : 0;
      const std::optional<size_t> available = memory.available_bytes();
      batch_size = cli::auto_batch_size(total - k1, available, per_video);
      progress.set_total_phases(1 + 4 + phases_for(total - k1, batch_size));
      if (!a.quiet && main_rank)
        progress.note(available ? fmt::format("--batch-size auto: {} at a time (one video took {:.2f} GiB; {:.2f} GiB free)",
                                              batch_size, per_video / double(1ull << 30), *available / double(1ull << 30))
                                : std::string("--batch-size auto: one at a time (the device's free memory is unknown)"));
    }
  }
  if (main_rank) estimator.save();
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.quiet && main_rank) {
    std::fprintf(stderr, "timing: load %.2fs", load_s);
    for (const auto& [phase, s] : timings) std::fprintf(stderr, ", %s %.2fs", phase.c_str(), s);
    std::fprintf(stderr, ", total %.2fs", total_s);
    if (options.device.is_cuda())
      std::fprintf(stderr, ", peak GPU memory %.2f GiB", allocator_for(options.device).peak_bytes() / double(1ull << 30));
    std::fprintf(stderr, "\n");
    for (const std::string& line : cache_summaries) std::fprintf(stderr, "cache: %s\n", line.c_str());
  }
  for (const std::string& path : written) std::printf("%s\n", path.c_str());
  return 0;
}

std::string yes_no(bool b) { return b ? "yes" : "no"; }

// `vgen info FILE`: the generation metadata vgen stored in a PNG or an MP4.
int run_info_file(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const media::Metadata m = ext == ".png" ? media::read_png_metadata(path) : media::read_video_metadata(path);
  if (m.empty()) std::fprintf(stderr, "%s: no metadata\n", path.c_str());
  for (const auto& [k, v] : m) std::printf("%-20s %s\n", k.c_str(), v.c_str());
  return 0;
}

// The transformer(s)' linear layers by weight format: what a static (ModelOpt-exported)
// checkpoint stores, or, with a dynamic quant_config, what loading will make of them (the
// float32 time embedder and the patch embedding, a convolution, stay as they are). Counted
// per checkpoint module: a fused projection (to_q | to_k | to_v) counts as its parts. FP8
// formats say ", fast accumulation" when their GEMMs accumulate fast (the default).
void print_linear_formats(const std::string& root, const QuantConfig& q) {
  const std::string fast_accum = q.fast_accum_on() ? ", fast accumulation" : "";
  for (const char* component : {"transformer", "transformer_2"}) {
    const fs::path dir = fs::path(root) / component;
    if (!fs::is_directory(dir)) continue;
    const WeightStore store = WeightStore::open_dir(dir.string());
    std::map<std::string, int> counts;
    for (const std::string& name : store.names()) {
      if (!name.ends_with(".weight")) continue;
      const std::string prefix = name.substr(0, name.size() - 7);
      const TensorInfo& info = store.info(name);
      std::string format;
      if (info.dtype == DType::F8_E4M3 && store.contains(prefix + ".weight_scale")) {
        format = std::string(store.info(prefix + ".weight_scale").shape.size() == 2 ? "fp8 128x128 blocks"
                                                                                    : "fp8 per-tensor") +
                 fast_accum + " (static)";
      } else if (info.dtype == DType::U8 && store.contains(prefix + ".weight_scale_2")) {
        format = "nvfp4 (static)";
      } else if (info.shape.size() == 2) {
        const bool float32_module = prefix.starts_with("condition_embedder.time_embedder.");
        if (q.enabled() && q.dynamic && !float32_module && !nn::quant_ignored(q, prefix))
          format = std::string(quant_format_name(nn::quant_format(q.quant_algo))) + fast_accum + " (quantized while loading)";
        else
          format = std::string(dtype_name(info.dtype)) + (float32_module ? " (kept in float32)" : "");
      } else {
        continue;
      }
      ++counts[format];
    }
    std::string row;
    for (const auto& [format, n] : counts) row += fmt::format("{}{} {}", row.empty() ? "" : ", ", n, format);
    std::printf("%-14s %s: %s\n", "linear layers", component, row.c_str());
  }
}

int run_info(const std::string& model, const QuantConfig& quant) {
  if (fs::is_regular_file(model)) return run_info_file(model);
  std::unique_ptr<DiffusionPipeline> pipeline = load_pipeline(resolve_model_path(model), PipelineOptions{});
  const PipelineCapabilities& c = pipeline->capabilities();
  std::printf("%-14s %s\n", "task", c.task_list().c_str());
  for (const auto& [k, v] : pipeline->describe()) std::printf("%-14s %s\n", k.c_str(), v.c_str());
  const std::string guidance = c.two_experts ? fmt::format("guidance {:.1f} / {:.1f} (high / low noise)",
                                                          c.default_guidance_scale, c.default_guidance_scale_2)
                                              : fmt::format("guidance {:.1f}", c.default_guidance_scale);
  std::printf("%-14s %lldx%lld (WxH%s), %lld frames, %d steps, %s, %d prompt tokens, %g fps\n", "defaults",
              static_cast<long long>(c.default_width), static_cast<long long>(c.default_height),
              c.image_input ? "; with an image: this area at its aspect ratio" : "",
              static_cast<long long>(c.default_num_frames), c.default_num_inference_steps, guidance.c_str(),
              c.default_max_sequence_length, c.default_fps);
  std::printf("%-14s height and width multiples of %lld, num_frames = %lldk+1\n", "sizes",
              static_cast<long long>(c.spatial_multiple), static_cast<long long>(c.temporal_multiple));
  auto input = [](bool accepted, bool required) { return std::string(required ? "required" : accepted ? "yes" : "no"); };
  std::printf("%-14s prompt, image %s, last image %s, LoRA %s, two experts %s\n", "inputs",
              input(c.image_input, c.image_required).c_str(), input(c.last_image_input, c.last_image_required).c_str(),
              yes_no(c.lora).c_str(), yes_no(c.two_experts).c_str());
  print_linear_formats(resolve_model_path(model), quant);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug: the engine's choices (e.g. each conv shape's kernel)
  CLI::App app{"vgen: diffusion-transformer video and image generation (diffusers checkpoints)"};
  app.set_version_flag("--version", std::string("vgen ") + VGEN_VERSION);
  app.require_subcommand(1);

  GenerateArgs g;
  CLI::App* gen = app.add_subcommand("generate", "Generate videos or images (one per prompt and --num-videos-per-prompt)");
  gen->add_option("--model", g.model, "Checkpoint folder in the diffusers layout (with model_index.json), or a Hugging Face repo id in the HF cache")->required();
  gen->add_option("--prompt", g.prompts, "Text prompt; repeat it for several videos")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->allow_extra_args(false);
  gen->add_option("--prompts-file", g.prompts_file, "A file of prompts, one per line (blank lines skipped), after any --prompt")
      ->check(CLI::ExistingFile);
  gen->add_option("--num-videos-per-prompt", g.num_videos_per_prompt, "Videos per prompt, with seeds seed, seed+1, ... (default 1)")
      ->check(cli::integer_in_range(1, 1000));
  gen->add_option("--batch-size", g.batch_size_text, "Videos run through the transformer together, 1 to 64, or auto: as many as the free GPU memory holds, measured on the first video (default 1; activation memory grows with it)")
      ->check(batch_size_flag());
  gen->add_option("--negative-prompt", g.negative_prompt, "Negative prompt (default: the model's, none for FLUX; \"\" is the empty prompt, as in diffusers)");
  gen->add_option("--height", g.params.height, "Height in pixels, a multiple of the model's spatial multiple (default: the model's; see vgen info)");
  gen->add_option("--width", g.params.width, "Width in pixels, a multiple of the model's spatial multiple (default: the model's)");
  gen->add_option("--num-frames", g.params.num_frames, "Frames, on the model's frame grid (default: the model's; see vgen info)");
  gen->add_option("--steps,--num-inference-steps", g.params.num_inference_steps, "Denoising steps (default: the model's)");
  gen->add_option("--timesteps", g.timesteps_text, "Explicit timesteps, comma-separated and decreasing, e.g. 1000,750,500,250 for step-distilled models (FlowMatchEulerDiscreteScheduler; the steps follow their count)");
  gen->add_option("--sigmas", g.sigmas_text, "Explicit sigmas in (0, 1], comma-separated and decreasing; the scheduler's shift still applies to them, as in diffusers");
  gen->add_option("--boundary-step", g.params.boundary_step, "Two-expert models: the step index at which the low-noise expert takes over (e.g. 2 of 4 distilled steps), instead of the model's boundary_ratio")
      ->check(cli::integer_in_range(0, 1000));
  gen->add_option("--guidance-scale", g.params.guidance_scale, "Classifier-free guidance scale (default: the model's; <= 1 disables CFG)");
  gen->add_option("--guidance-scale-2", g.params.guidance_scale_2, "Guidance scale of the low-noise expert of a two-expert model (default: --guidance-scale if given, else the model's)");
  gen->add_option("--image", g.image_file, "First frame for image-to-video (PNG, JPEG or WebP); resized to --height x --width, which default to the model's area at the image's aspect ratio")
      ->check(CLI::ExistingFile);
  gen->add_option("--last-image", g.last_image_file, "Last frame for first-last-frame-to-video (same size as --image)")
      ->check(CLI::ExistingFile);
  gen->add_option("--guidance-rescale", g.params.guidance_rescale, "Guidance rescale factor in [0, 1] (default 0)");
  gen->add_option("--true-cfg-scale", g.params.true_cfg_scale, "Guidance-distilled models: real classifier-free guidance with --negative-prompt when above 1 (diffusers' true_cfg_scale; default 1: off); --guidance-scale stays the distilled guidance the model embeds");
  gen->add_option("--max-sequence-length", g.params.max_sequence_length, "Prompt tokens (default: the model's)");
  gen->add_option("--cache-backend", g.cache_backend, "Step caching: none | teacache | magcache | fbcache (First-Block-Cache) | taylorseer; skips transformer calls, at some accuracy cost (README: Step caching)");
  gen->add_option("--cache-threshold", g.cache_threshold, "The cache's threshold in (0, 1]: teacache_thresh (default 0.2), MagCache's threshold (0.06) or First-Block-Cache's (0.05); higher skips more");
  gen->add_option("--cache-use-ret-steps", g.cache_use_ret_steps, "TeaCache: true (default): the first 5 steps computed, the retention-steps coefficients; false: the first and last step computed, the plain ones");
  gen->add_option("--cache-coefficients", g.cache_coefficients, "TeaCache: the rescaling polynomial, highest power first, comma-separated (default: the model's published ones; required for models without, e.g. two-expert ones)");
  gen->add_option("--cache-coefficients-2", g.cache_coefficients_2, "TeaCache on two-expert models: transformer_2's coefficients (required)");
  gen->add_option("--cache-mag-ratios", g.cache_mag_ratios, "MagCache: the model's magnitude ratios, one per step, comma-separated (required; interpolated to the steps)");
  gen->add_option("--cache-max-skip-steps", g.cache_max_skip_steps, "MagCache: at most this many skipped calls in a row (default 3)");
  gen->add_option("--cache-retention-ratio", g.cache_retention_ratio, "MagCache: the fraction of first steps never skipped (default 0.2)");
  gen->add_option("--cache-interval", g.cache_interval, "TaylorSeer: cache_interval, compute every N-th call after the warm-up, predict the others (default 5)");
  gen->add_option("--cache-disable-before", g.cache_disable_before, "TaylorSeer: disable_cache_before_step, the first N calls of each branch computed (default 3)");
  gen->add_option("--cache-disable-after", g.cache_disable_after, "TaylorSeer: disable_cache_after_step, calls from N on computed (default: none)");
  gen->add_option("--cache-max-order", g.cache_max_order, "TaylorSeer: max_order, the Taylor expansion's highest order (default 1)");
  gen->add_option("--cache-factors-dtype", g.cache_factors_dtype, "TaylorSeer: taylor_factors_dtype, bfloat16 (default) | float16 | float32");
  gen->add_option("--cache-lite-mode", g.cache_lite_mode, "TaylorSeer: use_lite_mode true|false (default false: diffusers' default identifiers, which may match no module of the model, then every call is computed; README: Step caching); true predicts the output (proj_out) and skips the whole forward");
  gen->add_option("--cache-max-continuous", g.cache_max_continuous, "Any cache: at most this many skipped calls in a row per branch (default 0: no limit beyond the method's own)");
  gen->add_option("--seed", g.seed_text, "Random seed, 0 to 2^64-1; -1 draws one and prints it (default 0)");
  gen->add_option("--fps", g.fps, "Frames per second of the MP4 (default: the model's)")->check(cli::positive_number());
  gen->add_option("--scheduler", g.scheduler, "Override the checkpoint's scheduler (UniPCMultistepScheduler, FlowMatchEulerDiscreteScheduler)");
  gen->add_option("--flow-shift", g.flow_shift, "Override the scheduler's flow shift")->check(cli::positive_number());
  gen->add_option("--latents", g.latents_file, "Initial noise from a safetensors file (tensor 'latents'), like diffusers' latents=")
      ->check(CLI::ExistingFile);
  gen->add_option("--device", g.device, "auto (a GPU when one is usable), cpu, cuda or cuda:N (default auto)");
  gen->add_option("--dtype", g.dtype, "Compute dtype of the transformer and text encoder: bf16, fp16, fp32 (default: bf16 on a GPU, fp32 on the CPU)");
  gen->add_option("--vae-dtype", g.vae_dtype, "The VAE's dtype (default: the model family's, as diffusers' examples run it; `vgen info` shows it)");
  gen->add_option("--vae-chunk-frames", g.vae_chunk_frames, "Video models: latent frames the VAE decodes per call after the first (default 1, as diffusers): the same video, with fewer and larger convolutions and more peak memory")
      ->check(cli::positive_number());
  gen->add_option("--attention-backend", g.attention_backend, "GPU attention: auto, cudnn (cuDNN's fused SDPA), flash (vgen's Hopper kernel, sm_90), reference, or sage (quantized INT8/FP8 kernel, sm_90: faster, lossy, opt-in) (default: VGEN_ATTENTION_BACKEND, else auto)")
      ->check(CLI::IsMember(std::vector<std::string>(kAttentionBackendNames.begin(), kAttentionBackendNames.end())));
  gen->add_flag("!--no-cuda-graphs", g.cuda_graphs, "Run the transformer step eagerly instead of replaying it from a CUDA graph");
  gen->add_flag("--offload-idle-expert", g.offload_idle_expert, "Two-expert models (a high- and a low-noise transformer): keep the idle expert in host memory, one expert on the GPU at a time (for GPUs that cannot hold both; costs one upload per switch)");
  gen->add_option("--lora", g.lora, "LoRA adapter fused into the transformer at load, FILE or FILE:SCALE (diffusers' load_lora_weights + fuse_lora(lora_scale=SCALE), default scale 1); repeatable, applied in order. Original/ComfyUI (diffusion_model.), musubi-tuner/kohya (lora_unet_) and diffusers/PEFT keys");
  gen->add_option("--lora-2", g.lora_2, "LoRA adapter for the low-noise expert (transformer_2) of a two-expert model, FILE or FILE:SCALE; repeatable");
  gen->add_option("--quant-algo", g.quant_algo, "Quantize the transformer's linear layers: FP8 (per-tensor e4m3), FP8_BLOCK_SCALES (128x128 weight blocks, 1x128 activation groups) or NVFP4 (4-bit weights, W4A16), ModelOpt's formats; none (default) keeps them in --dtype. See README, Quantization");
  gen->add_option("--linear-type", g.linear_type, "The same as --quant-algo in TensorRT-LLM's spelling: default, trtllm-fp8-per-tensor, trtllm-fp8-blockwise, trtllm-nvfp4");
  gen->add_flag("--quant-static", g.quant_static, "The checkpoint is ModelOpt-exported (pre-quantized weights with weight_scale / input_scale / weight_scale_2) instead of quantized while loading");
  gen->add_flag("--quant-fast-accum", g.quant_fast_accum, "FP8 formats on a GPU: cuBLASLt's fast accumulation (no periodic promotion of the partial sums to float32, as torch._scaled_mm's use_fast_accum and TensorRT-LLM's FP8 GEMMs): faster, slightly less accurate; the default; no effect on the CPU");
  gen->add_flag("--no-quant-fast-accum", g.quant_no_fast_accum, "FP8 formats on a GPU: accumulate with cuBLASLt's periodic float32 promotion instead (slower, slightly more accurate)");
  gen->add_option("--quant-ignore", g.quant_ignore, "Module-name pattern left unquantized (fnmatch, e.g. 'proj_out' or 'blocks.0.*'); repeatable")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->allow_extra_args(false);
  gen->add_flag("--lora-ignore-unmatched", g.lora_ignore_unmatched, "Skip (with a warning) LoRA keys that match no module of the transformer instead of failing");
  gen->add_flag("--conv-autotune", g.conv_autotune, "Time cuDNN's engines for each VAE convolution and keep the fastest (repaid from the second decode on; the first costs more)");
  gen->add_flag("!--no-gemm-autotune", g.gemm_autotune, "Take cuBLASLt's first heuristic algorithm for each GEMM shape instead of timing its leading 8 on the first call and keeping the fastest (default: VGEN_GEMM_AUTOTUNE, else on)");
  gen->add_option("-o,--output", g.output, "Output: .mp4 (H.264); .png/.jpg/.webp for a 1-frame image; a folder (DIR/) or a %04d.png pattern for lossless PNG frames");
  gen->add_option("--crf", g.crf, "MP4 quality: libx264 constant rate factor, 0 (best) to 51 (default 18, visually lossless)")
      ->check(cli::integer_in_range(0, 51));
  gen->add_option("--preset", g.preset, "MP4 encoding speed: libx264 preset ultrafast .. veryslow (default medium)")
      ->check(CLI::IsMember({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}));
  gen->add_option("--quality", g.quality, "JPEG/WebP quality, 1 to 100 (default 90; PNG is lossless)")
      ->check(cli::integer_in_range(1, 100));
  gen->add_flag("-q,--quiet", g.quiet, "No progress bar or timing summary");
  gen->add_option("--cfg-size", g.parallel.cfg_size, "CFG parallel: 2 runs the positive and negative branch on different GPUs (default 1); GPUs = cfg x ulysses x ring size, one process each (vgen launch); with --device cpu the ranks are threads")
      ->check(cli::integer_in_range(1, 2));
  gen->add_option("--ulysses-size", g.parallel.ulysses_size, "Ulysses sequence parallelism over this many GPUs (all-to-all over heads; must divide the transformer's attention heads, num_attention_heads in its config.json) (default 1)")
      ->check(cli::integer_in_range(1, 1024));
  gen->add_option("--ring-size", g.parallel.ring_size, "Ring attention over this many GPUs (key/value blocks passed around; any size) (default 1)")
      ->check(cli::integer_in_range(1, 1024));
  gen->add_flag("--parallel-vae", g.parallel_vae, "Split the VAE decode over all the ranks by latent rows (the whole decode's values up to float rounding; every rank gets the whole video)");

  std::string info_model;
  CLI::App* info = app.add_subcommand("info", "Show what a checkpoint holds and how vgen will run it, or how a PNG/MP4 was made");
  std::optional<std::string> info_quant_algo;
  QuantConfig info_quant;
  bool info_fast_accum = false, info_no_fast_accum = false;
  info->add_option("--quant-algo", info_quant_algo, "Show what --quant-algo FP8 | FP8_BLOCK_SCALES | NVFP4 makes of each linear layer (counts per format)");
  info->add_flag("--quant-fast-accum", info_fast_accum, "With an FP8 --quant-algo: fast accumulation (the default; as generate's)");
  info->add_flag("--no-quant-fast-accum", info_no_fast_accum, "With an FP8 --quant-algo: FP8 GEMMs without fast accumulation (as generate's)");
  info->add_option("--quant-ignore", info_quant.ignore, "Module-name pattern left unquantized (as generate's)")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->allow_extra_args(false);
  info->add_option("model", info_model, "Checkpoint folder in the diffusers layout, a Hugging Face repo id in the HF cache, or a PNG/MP4 that vgen wrote (shows how it was made)")->required();

  serving::ServeOptions serve;
  CLI::App* srv = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API (images, videos, models)");
  srv->add_option("--model", serve.model, "Checkpoint folder in the diffusers layout, or a Hugging Face repo id in the HF cache")->required();
  srv->add_option("--config", serve.config_file, "Engine YAML config (sections quant_config, cache_config, parallel_config, attention, cuda_graph, conv, gemm, offload)")
      ->check(CLI::ExistingFile);
  srv->add_option("--host", serve.host, "Address to bind (default 127.0.0.1)");
  srv->add_option("--port", serve.port, "Port (default 8000; 0 picks a free one)")->check(cli::integer_in_range(0, 65535));
  srv->add_option("--api-key", serve.api_key, "Require 'Authorization: Bearer KEY' on /v1 routes");
  srv->add_option("--media-dir", serve.media_dir, "Job database and media files (default ./vgen-media)");
  srv->add_option("--device", serve.device, "auto (a GPU when one is usable), cpu, cuda or cuda:N (default auto)");
  srv->add_option("--dtype", serve.dtype, "Compute dtype: bf16, fp16, fp32 (default: bf16 on a GPU, fp32 on the CPU)");
  srv->add_option("--lora-dir", serve.lora_dir, "A folder of LoRA adapters (*.safetensors) that requests may name in 'lora' / 'lora_2' (NAME[:SCALE],...; GET /v1/models lists them)")
      ->check(CLI::ExistingDirectory);
  srv->add_option("--lora-cached-variants", serve.lora_cached_variants, "Merged LoRA variants of the transformer kept in memory, the current one counted (default 1: a switch reloads the transformer)")
      ->check(cli::integer_in_range(1, 16));
  srv->add_flag("--offload-idle-expert", serve.offload_idle_expert, "Two-expert models (a high- and a low-noise transformer): keep the idle expert in host memory, one expert on the GPU at a time (for GPUs that cannot hold both)");
  srv->add_flag("--offload-text-encoder", serve.offload_text_encoder, "Free the text encoder after each generation's prompts are encoded (reloaded for the next one: less memory, slower requests)");

  // Listed for --help; run_launch parses it (before CLI11, as everything after `--` is the command).
  app.add_subcommand("launch", "Run one vgen process per GPU with torchrun's variables: vgen launch -n N -- generate ... (vgen launch --help)");

  cli::BenchArgs b;
  CLI::App* bench = app.add_subcommand("bench", "Time vgen on random inputs, one JSON line per result (tools/bench drives it beside diffusers)");
  bench->add_option("what", b.what, "attention, transformer, vae, image_encoder or pipeline")->required();
  bench->add_option("--model", b.model, "Checkpoint folder (pipeline root or the component's folder); not needed for attention");
  bench->add_option("--device", b.device, "auto, cpu or cuda (default auto)");
  bench->add_option("--dtype", b.dtype, "Compute dtype (default: bf16 on a GPU)");
  bench->add_option("--vae-dtype", b.vae_dtype, "VAE dtype for vae/pipeline (default: the model family's, as diffusers' examples run it)");
  bench->add_option("--vae-chunk-frames", b.vae_chunk_frames, "vae/pipeline of a video model: latent frames the VAE decodes per call after the first (default 1)")
      ->check(cli::positive_number());
  bench->add_option("--attention-backend", b.attention_backend, "auto, cudnn, flash, reference or sage (quantized, opt-in) (default: VGEN_ATTENTION_BACKEND, else auto)")
      ->check(CLI::IsMember(std::vector<std::string>(kAttentionBackendNames.begin(), kAttentionBackendNames.end())));
  bench->add_option("--height", b.height, "Height in pixels (default: the model's)");
  bench->add_option("--width", b.width, "Width in pixels (default: the model's)");
  bench->add_option("--num-frames", b.num_frames, "Frames (default: the model's)");
  bench->add_option("--seq", b.seq, "attention: sequence length (default 32760)");
  bench->add_option("--kv-seq", b.kv_seq, "attention: key/value length, for cross-attention (default: --seq)");
  bench->add_option("--heads", b.heads, "attention: heads (default 12)");
  bench->add_option("--head-dim", b.head_dim, "attention: head dim (default 128)");
  bench->add_option("--text-len", b.text_len, "transformer: text tokens (default 512)");
  bench->add_option("--steps", b.steps, "pipeline: denoising steps (default: the model's)");
  bench->add_option("--warmup", b.warmup, "Untimed runs first (pipeline: steps of the warm-up run) (default 2)");
  bench->add_option("--iters", b.iters, "Timed runs; the median is reported (default 5)");
  bench->add_flag("!--no-cuda-graphs", b.cuda_graphs, "transformer, pipeline: run the step eagerly, without CUDA graphs");
  bench->add_flag("--conv-autotune", b.conv_autotune, "vae, pipeline: autotune the GPU convolutions (as vgen serve does)");
  bench->add_flag("!--no-gemm-autotune", b.gemm_autotune, "Take cuBLASLt's first heuristic algorithm for each GEMM shape instead of timing the leading 8 (default: VGEN_GEMM_AUTOTUNE, else on)");
  bench->add_flag("--offload-idle-expert", b.offload_idle_expert, "pipeline: two-expert models keep the idle expert in host memory");
  bench->add_flag("--offload-text-encoder", b.offload_text_encoder, "pipeline: free the text encoder once the prompts are encoded, as vgen generate does");
  bench->add_option("-o,--output", b.output, "pipeline: also write the output (timed): an MP4, or for image models a .png, .jpg or .webp");
  bench->add_option("--inputs", b.inputs, "transformer: safetensors with hidden_states, timestep, encoder_hidden_states; vae: with z (decode) or video (--encode)")
      ->check(CLI::ExistingFile);
  bench->add_flag("--encode", b.encode, "vae: time the encoder (a video of the pixel size) instead of the decoder");
  bench->add_option("--vae-scale-factor-spatial", b.vae_scale_factor_spatial, "transformer: pixels per latent position (default: the vae folder beside it, else 8)");
  bench->add_option("--guidance-scale", b.guidance_scale, "pipeline: guidance scale (default: the model's; 1 runs no negative pass)");
  bench->add_option("--lora", b.lora, "pipeline: a LoRA adapter FILE[:SCALE] fused while loading (repeatable)");
  bench->add_option("--image", b.image, "pipeline: first frame for an image-to-video model")->check(CLI::ExistingFile);
  bench->add_option("--cache-config", b.cache_config, "pipeline: step caching, a JSON file holding a cache_config object (README: Step caching), or none; repeat it for one timed run each (after one load), reported in \"runs\"");
  bench->add_option("--latents", b.latents, "pipeline: initial noise, a safetensors file with a tensor 'latents'")->check(CLI::ExistingFile);
  bench->add_option("--save-latents", b.save_latents, "pipeline: write the denoised latents and the uint8 frames (safetensors: denoised_latents, frames)");
  bench->add_option("--quant-algo", b.quant_algo, "transformer, pipeline: quantize the linear layers: FP8, FP8_BLOCK_SCALES or NVFP4 (as generate's --quant-algo)");
  bench->add_flag("--quant-fast-accum", b.quant_fast_accum, "transformer, pipeline: FP8 GEMMs with cuBLASLt's fast accumulation (the default; as generate's)");
  bench->add_flag("--no-quant-fast-accum", b.quant_no_fast_accum, "transformer, pipeline: FP8 GEMMs without fast accumulation (as generate's)");
  bench->add_flag("--quant-static", b.quant_static, "transformer, pipeline: the checkpoint is ModelOpt-exported (pre-quantized)");
  bench->add_option("--save-output", b.save_output, "transformer, vae: write the output of one forward/decode/encode as raw float32");
  srv->add_option("--served-model-name", serve.served_model_name, "Model id in the API (default: the folder name)");
  srv->add_option("--max-queue", serve.max_queue, "Generations that may wait; more get 429 (default 64)")->check(cli::positive_number());

  // `vgen launch` takes the command to run after `--`: parsed by itself (cli/launch.h).
  if (argc > 1 && std::string(argv[1]) == "launch") {
    try {
      return cli::run_launch(argc - 2, argv + 2);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    }
  }
  // A mistyped command gets a suggestion rather than CLI11's "A subcommand is required".
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) commands.push_back(sub->get_name());
  if (argc > 1 && argv[1][0] != '-' && std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    const std::string match = cli::closest_match(argv[1], commands);
    std::fprintf(stderr, "error: unknown command '%s'%s (commands: generate, info, serve, bench, launch; vgen --help)\n", argv[1],
                 match.empty() ? "" : fmt::format("; did you mean '{}'?", match).c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A mistyped flag also shows up as a missing required one: name the typo first.
    if (argc > 1 && e.get_exit_code() != 0 && std::find(commands.begin(), commands.end(), argv[1]) != commands.end()) {
      const std::string hint = cli::suggest_flag(*app.get_subcommand(argv[1]), std::vector<std::string>(argv + 2, argv + argc));
      if (!hint.empty()) std::fprintf(stderr, "error: %s\n", hint.c_str());
    }
    return app.exit(e);
  }
  try {
    if (gen->parsed()) return run_generate(g);
    if (info->parsed()) {
      if (info_quant_algo) info_quant.quant_algo = parse_quant_algo(*info_quant_algo, "--quant-algo");
      if ((info_fast_accum || info_no_fast_accum) && !quant_fast_accum_applies(info_quant.quant_algo))
        fail("--{}quant-fast-accum needs --quant-algo FP8 or FP8_BLOCK_SCALES", info_no_fast_accum ? "no-" : "");
      if (info_fast_accum && info_no_fast_accum) fail("--quant-fast-accum and --no-quant-fast-accum: give one of them");
      if (info_fast_accum || info_no_fast_accum) info_quant.fast_accum = info_fast_accum;
      return run_info(info_model, info_quant);
    }
    if (srv->parsed()) {
      // A repo id from the Hugging Face cache keeps its name in the API (not the snapshot's hash).
      const std::string folder = resolve_model_path(serve.model);
      if (folder != serve.model && serve.served_model_name.empty())
        serve.served_model_name = serve.model.substr(0, serve.model.find('@'));
      serve.model = folder;
      return serving::run_server(serve);
    }
    if (bench->parsed()) {
      if (!b.model.empty()) b.model = resolve_model_path(b.model);
      return cli::run_bench(b);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
