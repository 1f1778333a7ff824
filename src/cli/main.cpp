// vgen: command-line entry point (generate, info, serve).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <tuple>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "api/model_path.h"
#include "api/visual_gen.h"
#include "cli/bench.h"
#include "cli/flags.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "core/allocator.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "media/metadata.h"
#include "media/mp4.h"
#include "nn/lora.h"
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
  std::string vae_dtype = "fp32";
  std::optional<std::string> attention_backend;  // unset: the environment's (VGEN_ATTENTION_BACKEND) or auto
  bool cuda_graphs = true;
  bool conv_autotune = false;
  bool offload_idle_expert = false;
  std::vector<std::string> lora, lora_2;  // FILE or FILE:SCALE
  bool lora_ignore_unmatched = false;
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
  int batch_size = 1;
  std::string seed_text = "0";  // parsed by cli::parse_seed: -1 draws a random seed
};

Tensor read_latents(const std::string& path) {
  const WeightStore store = WeightStore::open_files({path});
  const std::vector<std::string> names = store.names();
  if (store.contains("latents")) return store.get("latents").to(DType::F32);
  if (names.size() == 1) return store.get(names[0]).to(DType::F32);
  fail("{}: expected a tensor named 'latents' (or exactly one tensor), found {}", path, names.size());
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
  options.vae_dtype = parse_compute_dtype(a.vae_dtype);
  // One generation: the text encoder's memory goes to the transformer and VAE. Several keep
  // it rather than reload it for each video.
  options.offload_text_encoder = total == 1;
  options.offload_idle_expert = a.offload_idle_expert;
  // PipelineOptions starts from ExecutionSettings::from_environment(); the flags override it.
  if (a.attention_backend) options.execution.attention_backend = *a.attention_backend;
  options.execution.cuda_graphs = a.cuda_graphs;
  if (a.conv_autotune) options.execution.conv_autotune = true;
  options.scheduler.scheduler = a.scheduler;
  options.scheduler.flow_shift = a.flow_shift;
  if (a.negative_prompt) a.params.negative_prompt = a.negative_prompt;
  if (a.timesteps_text) a.params.timesteps = cli::parse_number_list(*a.timesteps_text, "--timesteps");
  if (a.sigmas_text) a.params.sigmas = cli::parse_number_list(*a.sigmas_text, "--sigmas");
  // LoRA files are read and their keys converted before the model loads: a bad file fails at once.
  for (const auto& [flag, texts, specs] : {std::tuple{"--lora", &a.lora, &options.lora},
                                           std::tuple{"--lora-2", &a.lora_2, &options.lora_2}})
    for (const std::string& text : *texts) {
      nn::LoraAdapterSpec spec = nn::parse_lora_adapter_spec(text);
      if (!fs::is_regular_file(spec.path)) fail("{} {}: no such file", flag, spec.path);
      nn::LoraSet({spec}, a.lora_ignore_unmatched);
      specs->push_back(std::move(spec));
    }
  options.lora_ignore_unmatched = a.lora_ignore_unmatched;
  if (!a.latents_file.empty()) a.params.latents = read_latents(a.latents_file);
  // Images are decoded before the model loads: a file that does not decode fails at once.
  if (!a.image_file.empty()) a.params.image = media::read_image(a.image_file);
  if (!a.last_image_file.empty()) {
    if (a.image_file.empty()) fail("--last-image needs --image (the first frame) too");
    a.params.last_image = media::read_image(a.last_image_file);
  }

  const int batch_size = std::min(a.batch_size, total);
  const int groups = (total + batch_size - 1) / batch_size;
  Progress progress(1 + 4 * groups, !a.quiet);
  progress.begin(fmt::format("loading {} ({} {})", a.model, options.device.str(), dtype_name(options.dtype)));
  VisualGen gen(a.model, options);
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
  if (!a.quiet) {
    std::fprintf(stderr, "vgen: %s on %s (%s), %lldx%lld, %lld frames, %d steps, guidance %.2f, seed %llu%s%s\n",
                 gen.pipeline().class_name().c_str(), options.device.str().c_str(),
                 std::string(dtype_name(options.dtype)).c_str(), static_cast<long long>(first.width),
                 static_cast<long long>(first.height), static_cast<long long>(first.num_frames),
                 first.num_inference_steps, first.guidance_scale, static_cast<unsigned long long>(first.seed),
                 random ? " (random)" : "",
                 total > 1 ? fmt::format("; {} videos, seeds {} to {}", total, first.seed, requests.back().seed).c_str() : "");
  }
  // The seed is part of the result: print it even with --quiet when it was drawn.
  if (random && a.quiet) std::fprintf(stderr, "vgen: random seed %llu\n", static_cast<unsigned long long>(first.seed));

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
  for (int k = 0; k < total; ++k) {
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
  for (int k0 = 0; k0 < total; k0 += batch_size) {
    const int k1 = std::min(total, k0 + batch_size);
    const std::vector<ResolvedParams> group(requests.begin() + k0, requests.begin() + k1);
    const std::string of = total == 1        ? ""
                           : k1 - k0 == 1    ? fmt::format(" (video {}/{})", k0 + 1, total)
                                             : fmt::format(" (videos {}-{}/{})", k0 + 1, k1, total);
    progress.begin(std::string(k1 - k0 == 1 ? "encoding the prompt" : "encoding the prompts") +
                   (requests[static_cast<size_t>(k0)].image.defined() ? " and the image" : "") + of);
    // The pipeline reports denoising steps only: the first step ends the encoding phase, the
    // last one starts the decoding phase.
    auto encode_start = std::chrono::steady_clock::now();
    const bool two_experts = gen.pipeline().capabilities().two_experts;
    int expert = 0;
    std::vector<GenerationOutput> outs = gen.generate_batch(group, batch_size, [&](const StepProgress& p) {
      if (p.step == 1) {
        const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - encode_start).count();
        progress.end(std::max(0.0, since - p.step_seconds));
        progress.begin("denoising" + of, p.step_seconds);
        progress.start_steps(p.total);
      }
      progress.step(p.step, p.step_seconds);
      // Two experts: say where the low-noise one took over.
      if (two_experts && !a.quiet && p.expert != expert)
        progress.note(fmt::format("step {}: the low-noise expert (transformer_2) took over", p.step));
      expert = p.expert;
      if (p.step == p.total) progress.begin("decoding (VAE)" + of);
      return true;
    });
    progress.end();
    for (const auto& [phase, s] : outs.front().timings) add_timing(phase, s);

    progress.begin("writing" + of);
    for (int k = k0; k < k1; ++k) {
      const GenerationOutput& out = outs[static_cast<size_t>(k - k0)];
      const cli::OutputTarget out_target = cli::output_for_video(target, k, total);
      const double fps = a.fps.value_or(out.fps);
      write_output(a, out_target, out.frames, fps, gen.metadata(requests[static_cast<size_t>(k)], fps));
      written.push_back(out_target.path);
    }
    add_timing("write", progress.end());
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.quiet) {
    std::fprintf(stderr, "timing: load %.2fs", load_s);
    for (const auto& [phase, s] : timings) std::fprintf(stderr, ", %s %.2fs", phase.c_str(), s);
    std::fprintf(stderr, ", total %.2fs", total_s);
    if (options.device.is_cuda())
      std::fprintf(stderr, ", peak GPU memory %.2f GiB", allocator_for(options.device).peak_bytes() / double(1ull << 30));
    std::fprintf(stderr, "\n");
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

int run_info(const std::string& model) {
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
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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
  gen->add_option("--batch-size", g.batch_size, "Videos run through the transformer together (default 1; activation memory grows with it)")
      ->check(cli::integer_in_range(1, 64));
  gen->add_option("--negative-prompt", g.negative_prompt, "Negative prompt (default: the model's; \"\" for none)");
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
  gen->add_option("--seed", g.seed_text, "Random seed, 0 to 2^64-1; -1 draws one and prints it (default 0)");
  gen->add_option("--fps", g.fps, "Frames per second of the MP4 (default: the model's)")->check(cli::positive_number());
  gen->add_option("--scheduler", g.scheduler, "Override the checkpoint's scheduler (UniPCMultistepScheduler, FlowMatchEulerDiscreteScheduler)");
  gen->add_option("--flow-shift", g.flow_shift, "Override the scheduler's flow shift")->check(cli::positive_number());
  gen->add_option("--latents", g.latents_file, "Initial noise from a safetensors file (tensor 'latents'), like diffusers' latents=")
      ->check(CLI::ExistingFile);
  gen->add_option("--device", g.device, "auto (a GPU when one is usable), cpu, cuda or cuda:N (default auto)");
  gen->add_option("--dtype", g.dtype, "Compute dtype of the transformer and text encoder: bf16, fp16, fp32 (default: bf16 on a GPU, fp32 on the CPU)");
  gen->add_option("--vae-dtype", g.vae_dtype, "The VAE's dtype (default fp32)");
  gen->add_option("--attention-backend", g.attention_backend, "GPU attention: auto, cudnn (fused SDPA) or reference (default: VGEN_ATTENTION_BACKEND, else auto)");
  gen->add_flag("!--no-cuda-graphs", g.cuda_graphs, "Run the transformer step eagerly instead of replaying it from a CUDA graph");
  gen->add_flag("--offload-idle-expert", g.offload_idle_expert, "Two-expert models (a high- and a low-noise transformer): keep the idle expert in host memory, one expert on the GPU at a time (for GPUs that cannot hold both; costs one upload per switch)");
  gen->add_option("--lora", g.lora, "LoRA adapter fused into the transformer at load, FILE or FILE:SCALE (diffusers' load_lora_weights + fuse_lora(lora_scale=SCALE), default scale 1); repeatable, applied in order. Original/ComfyUI (diffusion_model.), musubi-tuner/kohya (lora_unet_) and diffusers/PEFT keys");
  gen->add_option("--lora-2", g.lora_2, "LoRA adapter for the low-noise expert (transformer_2) of a two-expert model, FILE or FILE:SCALE; repeatable");
  gen->add_flag("--lora-ignore-unmatched", g.lora_ignore_unmatched, "Skip (with a warning) LoRA keys that match no module of the transformer instead of failing");
  gen->add_flag("--conv-autotune", g.conv_autotune, "Time cuDNN's engines for each VAE convolution and keep the fastest (repaid from the second decode on; the first costs more)");
  gen->add_option("-o,--output", g.output, "Output: .mp4 (H.264); .png/.jpg/.webp for a 1-frame image; a folder (DIR/) or a %04d.png pattern for lossless PNG frames");
  gen->add_option("--crf", g.crf, "MP4 quality: libx264 constant rate factor, 0 (best) to 51 (default 18, visually lossless)")
      ->check(cli::integer_in_range(0, 51));
  gen->add_option("--preset", g.preset, "MP4 encoding speed: libx264 preset ultrafast .. veryslow (default medium)")
      ->check(CLI::IsMember({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}));
  gen->add_option("--quality", g.quality, "JPEG/WebP quality, 1 to 100 (default 90; PNG is lossless)")
      ->check(cli::integer_in_range(1, 100));
  gen->add_flag("-q,--quiet", g.quiet, "No progress bar or timing summary");

  std::string info_model;
  CLI::App* info = app.add_subcommand("info", "Show what a checkpoint holds and how vgen will run it, or how a PNG/MP4 was made");
  info->add_option("model", info_model, "Checkpoint folder in the diffusers layout, a Hugging Face repo id in the HF cache, or a PNG/MP4 that vgen wrote (shows how it was made)")->required();

  serving::ServeOptions serve;
  CLI::App* srv = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API (images, videos, models)");
  srv->add_option("--model", serve.model, "Checkpoint folder in the diffusers layout, or a Hugging Face repo id in the HF cache")->required();
  srv->add_option("--config", serve.config_file, "Engine YAML config (sections linear, teacache, parallel, attention, cuda_graph, conv)")
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

  cli::BenchArgs b;
  CLI::App* bench = app.add_subcommand("bench", "Time vgen on random inputs, one JSON line per result (tools/bench drives it beside diffusers)");
  bench->add_option("what", b.what, "attention, transformer, vae, image_encoder or pipeline")->required();
  bench->add_option("--model", b.model, "Checkpoint folder (pipeline root or the component's folder); not needed for attention");
  bench->add_option("--device", b.device, "auto, cpu or cuda (default auto)");
  bench->add_option("--dtype", b.dtype, "Compute dtype (default: bf16 on a GPU)");
  bench->add_option("--vae-dtype", b.vae_dtype, "VAE dtype for vae/pipeline (default fp32)");
  bench->add_option("--attention-backend", b.attention_backend, "auto, cudnn or reference (default: VGEN_ATTENTION_BACKEND, else auto)");
  bench->add_option("--height", b.height, "Height in pixels (default: the model's)");
  bench->add_option("--width", b.width, "Width in pixels (default: the model's)");
  bench->add_option("--num-frames", b.num_frames, "Frames (default: the model's)");
  bench->add_option("--seq", b.seq, "attention: sequence length (default 32760)");
  bench->add_option("--heads", b.heads, "attention: heads (default 12)");
  bench->add_option("--head-dim", b.head_dim, "attention: head dim (default 128)");
  bench->add_option("--text-len", b.text_len, "transformer: text tokens (default 512)");
  bench->add_option("--steps", b.steps, "pipeline: denoising steps (default: the model's)");
  bench->add_option("--warmup", b.warmup, "Untimed runs first (pipeline: steps of the warm-up run) (default 2)");
  bench->add_option("--iters", b.iters, "Timed runs; the median is reported (default 5)");
  bench->add_flag("!--no-cuda-graphs", b.cuda_graphs, "transformer, pipeline: run the step eagerly, without CUDA graphs");
  bench->add_flag("--conv-autotune", b.conv_autotune, "vae, pipeline: autotune the GPU convolutions (as vgen serve does)");
  bench->add_flag("--offload-idle-expert", b.offload_idle_expert, "pipeline: two-expert models keep the idle expert in host memory");
  bench->add_flag("--offload-text-encoder", b.offload_text_encoder, "pipeline: free the text encoder once the prompts are encoded, as vgen generate does");
  bench->add_option("-o,--output", b.output, "pipeline: also write the MP4 (timed)");
  bench->add_option("--inputs", b.inputs, "transformer: safetensors with hidden_states, timestep, encoder_hidden_states; vae: with z (decode) or video (--encode)")
      ->check(CLI::ExistingFile);
  bench->add_flag("--encode", b.encode, "vae: time the encoder (a video of the pixel size) instead of the decoder");
  bench->add_option("--vae-scale-factor-spatial", b.vae_scale_factor_spatial, "transformer: pixels per latent position (default: the vae folder beside it, else 8)");
  bench->add_option("--image", b.image, "pipeline: first frame for an image-to-video model")->check(CLI::ExistingFile);
  bench->add_option("--save-output", b.save_output, "transformer, vae: write the output of one forward/decode/encode as raw float32");
  srv->add_option("--served-model-name", serve.served_model_name, "Model id in the API (default: the folder name)");
  srv->add_option("--max-queue", serve.max_queue, "Generations that may wait; more get 429 (default 64)")->check(cli::positive_number());

  // A mistyped command gets a suggestion rather than CLI11's "A subcommand is required".
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) commands.push_back(sub->get_name());
  if (argc > 1 && argv[1][0] != '-' && std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    const std::string match = cli::closest_match(argv[1], commands);
    std::fprintf(stderr, "error: unknown command '%s'%s (commands: generate, info, serve, bench; vgen --help)\n", argv[1],
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
    if (info->parsed()) return run_info(info_model);
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
