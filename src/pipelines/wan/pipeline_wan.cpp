#include "pipelines/wan/pipeline_wan.h"

#include <chrono>
#include <filesystem>

#include "core/random.h"
#include "media/frames.h"
#include "ops/ops.h"
#include "pipelines/denoising_loop.h"
#include "text/prompt_clean.h"

namespace vgen {

const char* const kWanDefaultNegativePrompt =
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards";

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string human_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

// "F32 2.1 MiB in 1 file" for a component's weights.
std::string describe_weights(const DiffusersCheckpoint& ckpt, const std::string& name) {
  const WeightStore store = ckpt.component_weights(name);
  std::map<std::string, size_t> dtypes;
  size_t params = 0;
  for (const std::string& n : store.names()) {
    const TensorInfo& info = store.info(n);
    dtypes[std::string(dtype_name(info.dtype))] += 1;
    params += static_cast<size_t>(shape_numel(info.shape));
  }
  std::string kinds;
  for (const auto& [d, count] : dtypes) kinds += (kinds.empty() ? "" : "+") + d;
  return fmt::format("{} parameters, {} ({}), {} tensors", params, human_bytes(store.total_bytes()), kinds,
                     store.names().size());
}

// Wan2.1's facts: what diffusers' WanPipeline.__call__ defaults to and checks, the frame
// rate of the Wan examples' export_to_video, and the sizes wan.md gives per model size.
PipelineCapabilities wan_capabilities(const WanTransformer3DModelConfig& tcfg, const AutoencoderKLWanConfig& vcfg) {
  PipelineCapabilities c;
  c.tasks = {"text-to-video"};
  c.default_fps = 16.0;
  // Both factors come from the VAE config, as in diffusers.
  c.temporal_multiple = vcfg.scale_factor_temporal;
  c.spatial_multiple = vcfg.scale_factor_spatial * tcfg.patch_size[1];
  // The 14B models (dim 5120) default to 720p, the 1.3B ones to 480p.
  const bool large = tcfg.num_attention_heads * tcfg.attention_head_dim >= 5120;
  c.default_height = large ? 720 : 480;
  c.default_width = large ? 1280 : 832;
  c.default_num_frames = 81;
  c.default_num_inference_steps = 50;
  c.default_guidance_scale = 5.0;
  c.default_max_sequence_length = 512;
  return c;
}

}  // namespace

std::unique_ptr<WanPipeline> WanPipeline::from_pretrained(const DiffusersCheckpoint& ckpt, const PipelineOptions& options,
                                                          std::shared_ptr<ExecutionContext> context) {
  for (const char* required : {"tokenizer", "text_encoder", "transformer", "vae", "scheduler"}) {
    if (!ckpt.has_component(required))
      fail("{}/model_index.json: WanPipeline needs a '{}' component", ckpt.root(), required);
  }
  if (ckpt.has_component("transformer_2"))
    fail("{}: two-expert Wan2.2 checkpoints (transformer_2) are not supported yet", ckpt.root());
  std::unique_ptr<WanPipeline> p(new WanPipeline(std::move(context)));
  ContextScope scope(*p->context_);
  p->options_ = options;
  p->tokenizer_ = std::make_unique<T5Tokenizer>(T5Tokenizer::from_pretrained(ckpt.component_dir("tokenizer")));
  p->text_encoder_dir_ = ckpt.component_dir("text_encoder");
  p->text_encoder_ = UMT5EncoderModel::from_pretrained(p->text_encoder_dir_, options.dtype, options.device);
  p->transformer_ = WanTransformer3DModel::from_pretrained(ckpt.component_dir("transformer"), options.dtype, options.device);
  p->transformer_->enable_cuda_graphs(p->context_->settings().cuda_graphs && options.device.is_cuda());
  // The VAE runs in float32 by default, as diffusers' Wan examples advise. Text-to-video only
  // decodes: the encoder's weights stay on disk.
  p->vae_ = AutoencoderKLWan::from_pretrained(ckpt.component_dir("vae"), options.vae_dtype, options.device,
                                              {.encoder = false});
  p->scheduler_ = make_scheduler(ckpt.component_config("scheduler"), ckpt.component_config_path("scheduler"), options.scheduler);

  const auto& tcfg = p->transformer_->config();
  const auto& vcfg = p->vae_->config();
  if (tcfg.text_dim != p->text_encoder_->config().d_model)
    fail("{}: transformer text_dim {} does not match the text encoder's d_model {}", ckpt.root(), tcfg.text_dim,
         p->text_encoder_->config().d_model);
  if (tcfg.in_channels != vcfg.z_dim)
    fail("{}: transformer in_channels {} does not match the VAE's z_dim {}", ckpt.root(), tcfg.in_channels, vcfg.z_dim);
  p->capabilities_ = wan_capabilities(tcfg, vcfg);
  p->description_ = {
      {"pipeline", "WanPipeline (text-to-video)"},
      {"model", ckpt.root()},
      {"device", options.device.str()},
      {"compute dtype", fmt::format("{} (VAE {})", dtype_name(options.dtype), dtype_name(options.vae_dtype))},
      {"tokenizer", ckpt.component("tokenizer").class_name},
      {"text_encoder", fmt::format("{}: {}", ckpt.component("text_encoder").class_name, describe_weights(ckpt, "text_encoder"))},
      {"transformer", fmt::format("{}: {} layers, {} heads x {}, ffn {}; {}", ckpt.component("transformer").class_name,
                                  tcfg.num_layers, tcfg.num_attention_heads, tcfg.attention_head_dim, tcfg.ffn_dim,
                                  describe_weights(ckpt, "transformer"))},
      {"vae", fmt::format("{}: z_dim {}, compression {}x{}x{}; {}", ckpt.component("vae").class_name, vcfg.z_dim,
                          vcfg.scale_factor_temporal, vcfg.scale_factor_spatial, vcfg.scale_factor_spatial,
                          describe_weights(ckpt, "vae"))},
      {"scheduler", p->scheduler_->name()},
  };
  return p;
}

std::vector<std::pair<std::string, std::string>> WanPipeline::describe() const { return description_; }

std::optional<int64_t> WanPipeline::prompt_token_count(const std::string& prompt) const {
  // As encode_prompt sees it: cleaned, then tokenized with </s>.
  return static_cast<int64_t>(tokenizer_->encode(wan_prompt_clean(prompt)).size());
}

ResolvedParams WanPipeline::resolve(const GenerationParams& params) const {
  ContextScope scope(*context_);
  const auto& tcfg = transformer_->config();
  const PipelineCapabilities& c = capabilities_;
  ResolvedParams r;
  r.prompt = params.prompt;
  r.negative_prompt = params.negative_prompt.value_or(kWanDefaultNegativePrompt);
  r.height = params.height.value_or(c.default_height);
  r.width = params.width.value_or(c.default_width);
  r.num_frames = params.num_frames.value_or(c.default_num_frames);
  r.num_inference_steps = params.num_inference_steps.value_or(c.default_num_inference_steps);
  r.guidance_scale = params.guidance_scale.value_or(c.default_guidance_scale);
  r.guidance_rescale = params.guidance_rescale;
  r.max_sequence_length = params.max_sequence_length.value_or(c.default_max_sequence_length);
  r.seed = params.seed;

  const int64_t temporal = c.temporal_multiple;
  const int64_t spatial = c.spatial_multiple;
  if (r.height <= 0 || r.height % spatial != 0)
    fail("height must be a positive multiple of {} (got {})", spatial, r.height);
  if (r.width <= 0 || r.width % spatial != 0) fail("width must be a positive multiple of {} (got {})", spatial, r.width);
  if (r.num_frames < 1 || (r.num_frames - 1) % temporal != 0)
    fail("num_frames must be of the form {}k+1 (1, {}, {}, ..., 81), got {}", temporal, temporal + 1, 2 * temporal + 1,
         r.num_frames);
  if (r.num_inference_steps < 1 || r.num_inference_steps > 1000)
    fail("num_inference_steps must be between 1 and 1000, got {}", r.num_inference_steps);
  if (!(r.guidance_scale >= 0.0 && r.guidance_scale <= 100.0))
    fail("guidance_scale must be between 0 and 100, got {}", r.guidance_scale);
  if (!(r.guidance_rescale >= 0.0 && r.guidance_rescale <= 1.0))
    fail("guidance_rescale must be between 0 and 1, got {}", r.guidance_rescale);
  if (r.max_sequence_length < 1 || r.max_sequence_length > 4096)
    fail("max_sequence_length must be between 1 and 4096, got {}", r.max_sequence_length);
  // Latent tokens must fit the rotary tables (rope_max_seq_len positions per axis).
  const Shape shape = latent_shape(r);
  for (int i = 0; i < 3; ++i) {
    const int64_t positions = shape[2 + i] / tcfg.patch_size[i];
    if (positions > tcfg.rope_max_seq_len)
      fail("{}x{}x{} frames is too large: {} positions on one axis exceed the model's rope_max_seq_len {}", r.width,
           r.height, r.num_frames, positions, tcfg.rope_max_seq_len);
  }
  if (params.latents.defined()) {
    if (params.latents.shape() != shape)
      fail("latents have shape {}, but {}x{} with {} frames needs {}", shape_str(params.latents.shape()), r.width,
           r.height, r.num_frames, shape_str(shape));
    r.latents = params.latents;
  }
  return r;
}

Shape WanPipeline::latent_shape(const ResolvedParams& p) const {
  const auto& vcfg = vae_->config();
  return {1, transformer_->config().in_channels, (p.num_frames - 1) / vcfg.scale_factor_temporal + 1,
          p.height / vcfg.scale_factor_spatial, p.width / vcfg.scale_factor_spatial};
}

Tensor WanPipeline::encode_prompt(const std::vector<std::string>& prompts, int max_sequence_length) const {
  ContextScope scope(*context_);
  std::vector<std::string> cleaned;
  for (const std::string& p : prompts) cleaned.push_back(wan_prompt_clean(p));
  const TokenizerOutput tokens = (*tokenizer_)(cleaned, max_sequence_length);
  const Device device = options_.device;
  VGEN_CHECK(text_encoder_ != nullptr, "WanPipeline: the text encoder is not loaded");
  Tensor hidden = text_encoder_->forward(tokens.input_ids.to(device), tokens.attention_mask.to(device));
  // diffusers keeps u[:len] of each prompt and pads back with zeros.
  return zero_padded_positions(hidden, tokens.lengths).to(options_.dtype);
}

Tensor WanPipeline::decode_latents(const Tensor& latents) const {
  ContextScope scope(*context_);
  const auto& cfg = vae_->config();
  const int64_t z = cfg.z_dim;
  std::vector<float> inv_std(z), mean(cfg.latents_mean.begin(), cfg.latents_mean.end());
  // diffusers divides by 1/std (both float32) rather than multiplying by std: keep its rounding.
  for (int64_t c = 0; c < z; ++c) inv_std[c] = 1.0f / static_cast<float>(cfg.latents_std[c]);
  const Device device = latents.device();
  const Tensor inv = Tensor::from_vector(inv_std, {1, z, 1, 1, 1}).to(device);
  const Tensor m = Tensor::from_vector(mean, {1, z, 1, 1, 1}).to(device);
  const Tensor x = ops::add(ops::div(latents.to(DType::F32), inv), m);
  return vae_->decode(x.to(vae_->dtype()));
}

GenerationOutput WanPipeline::generate(const ResolvedParams& r, const StepCallback& on_step) {
  return std::move(run({&r}, on_step).front());
}

namespace {

// Whether b can share a denoising loop with a: everything but prompt and seed alike.
bool batch_compatible(const ResolvedParams& a, const ResolvedParams& b) {
  return !a.latents.defined() && !b.latents.defined() && a.negative_prompt == b.negative_prompt &&
         a.height == b.height && a.width == b.width && a.num_frames == b.num_frames &&
         a.num_inference_steps == b.num_inference_steps && a.guidance_scale == b.guidance_scale &&
         a.guidance_rescale == b.guidance_rescale && a.max_sequence_length == b.max_sequence_length;
}

}  // namespace

std::vector<GenerationOutput> WanPipeline::generate_batch(const std::vector<ResolvedParams>& requests, int max_batch,
                                                          const StepCallback& on_step) {
  std::vector<GenerationOutput> outputs;
  size_t i = 0;
  while (i < requests.size()) {
    std::vector<const ResolvedParams*> batch = {&requests[i]};
    while (i + batch.size() < requests.size() && static_cast<int>(batch.size()) < max_batch &&
           batch_compatible(requests[i], requests[i + batch.size()]))
      batch.push_back(&requests[i + batch.size()]);
    for (GenerationOutput& out : run(batch, on_step)) outputs.push_back(std::move(out));
    i += batch.size();
  }
  return outputs;
}

std::vector<GenerationOutput> WanPipeline::run(const std::vector<const ResolvedParams*>& batch,
                                               const StepCallback& on_step) {
  ContextScope scope(*context_);
  const ResolvedParams& r = *batch.front();
  const int64_t n = static_cast<int64_t>(batch.size());
  std::vector<std::pair<std::string, double>> timings;
  const Device device = options_.device;

  auto start = std::chrono::steady_clock::now();
  if (!text_encoder_) {  // freed after the previous generation's prompts (offload_text_encoder)
    text_encoder_ = UMT5EncoderModel::from_pretrained(text_encoder_dir_, options_.dtype, options_.device);
    ops::synchronize(device);
    timings.emplace_back("load_text_encoder", seconds_since(start));
    start = std::chrono::steady_clock::now();
  }
  const bool cfg = r.guidance_scale > 1.0;
  std::vector<std::string> prompts;
  for (const ResolvedParams* p : batch) prompts.push_back(p->prompt);
  const Tensor prompt_embeds = encode_prompt(prompts, r.max_sequence_length);
  Tensor negative_embeds;
  if (cfg) {
    negative_embeds = encode_prompt({r.negative_prompt}, r.max_sequence_length);
    if (n > 1) negative_embeds = ops::cat(std::vector<Tensor>(static_cast<size_t>(n), negative_embeds), 0);
  }
  if (options_.offload_text_encoder) text_encoder_.reset();
  ops::synchronize(device);
  timings.emplace_back("encode_prompt", seconds_since(start));

  start = std::chrono::steady_clock::now();
  const Shape shape = latent_shape(r);
  Tensor latents;
  if (r.latents.defined()) {
    // resolve() checked the shape; a hand-made ResolvedParams is checked here too.
    if (r.latents.shape() != shape)
      fail("latents have shape {}, but {}x{} with {} frames needs {}", shape_str(r.latents.shape()), r.width, r.height,
           r.num_frames, shape_str(shape));
    latents = r.latents.to(DType::F32).to(device);
  } else {
    // Each video's noise from its own seed: the same as when it runs alone.
    std::vector<Tensor> noise;
    for (const ResolvedParams* p : batch) noise.push_back(randn(shape, p->seed));
    latents = ops::cat(noise, 0).to(device);
  }
  scheduler_->set_timesteps(r.num_inference_steps);
  DenoiseConfig loop;
  loop.guidance_scale = r.guidance_scale;
  loop.guidance_rescale = r.guidance_rescale;
  loop.do_classifier_free_guidance = cfg;
  const DenoiseFn predict = [&](const Tensor& x, double t, Branch branch) {
    const Tensor timestep = Tensor::full({x.size(0)}, static_cast<float>(t), DType::F32, device);
    const Tensor& context = branch == Branch::Conditional ? prompt_embeds : negative_embeds;
    // The transformer runs in its compute dtype; the scheduler keeps float32 latents.
    return transformer_->forward(x.to(options_.dtype), timestep, context).to(DType::F32);
  };
  const Tensor denoised = run_denoising_loop(*scheduler_, latents, loop, predict, on_step);
  ops::synchronize(device);
  timings.emplace_back("denoise", seconds_since(start));

  start = std::chrono::steady_clock::now();
  std::vector<GenerationOutput> outputs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    GenerationOutput& out = outputs[static_cast<size_t>(i)];
    out.fps = capabilities_.default_fps;
    // One video at a time through the VAE: its memory does not grow with the batch.
    out.denoised_latents = n == 1 ? denoised : denoised.narrow(0, i, 1).contiguous();
    out.video = decode_latents(out.denoised_latents);
    out.frames = media::video_to_uint8_frames(out.video.to(Device::cpu()));
  }
  timings.emplace_back("decode", seconds_since(start));
  // The videos of a batch share its timings.
  for (GenerationOutput& out : outputs) out.timings = timings;
  return outputs;
}

}  // namespace vgen
