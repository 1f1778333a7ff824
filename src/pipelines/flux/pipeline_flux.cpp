#include "pipelines/flux/pipeline_flux.h"

#include <chrono>
#include <cmath>
#include <iostream>

#include <spdlog/spdlog.h>

#include "core/random.h"
#include "io/config_reader.h"
#include "media/frames.h"
#include "media/image_processor.h"
#include "ops/ops.h"
#include "pipelines/denoising_loop.h"

namespace vgen {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// x rounded to `dtype` and back to float32: torch's `.to(dtype)` of a scalar tensor.
float round_to(float x, DType dtype) {
  if (dtype == DType::F32) return x;
  return Tensor::from_vector({x}, {1}).to(dtype).to(DType::F32).item();
}

// scheduler.config.get(key, fallback) for a number.
double config_number(const Json& config, const char* key, double fallback) {
  return config.contains(key) && config.at(key).is_number() ? config.at(key).get<double>() : fallback;
}

// Step caching runs in the Wan pipelines only: a cache_config for FLUX is an error, not ignored.
void check_no_cache(const CacheConfig& cache, const std::string& class_name) {
  if (cache.enabled())
    fail("cache_config.cache_backend: {} runs no step cache in vgen (got {}; step caching is for the Wan pipelines)",
         class_name, cache_backend_name(cache.cache_backend));
}

}  // namespace

std::unique_ptr<FluxPipeline> FluxPipeline::from_pretrained(const DiffusersCheckpoint& ckpt,
                                                            const PipelineOptions& options,
                                                            std::shared_ptr<ExecutionContext> context) {
  for (const char* required :
       {"tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae", "scheduler"}) {
    if (!ckpt.has_component(required))
      fail("{}/model_index.json: {} needs a '{}' component", ckpt.root(), ckpt.class_name(), required);
  }
  if (!options.lora.empty() || !options.lora_2.empty())
    fail("{}: {} takes no LoRA adapters in vgen yet", ckpt.root(), ckpt.class_name());
  check_no_cache(options.cache, ckpt.class_name());  // before any weight loads
  if (options.vae_chunk_frames != 1)
    fail("{}: vae_chunk_frames {}: {}'s VAE decodes one image; the option is the Wan VAE's", ckpt.root(),
         options.vae_chunk_frames, ckpt.class_name());
  std::unique_ptr<FluxPipeline> p(new FluxPipeline(std::move(context)));
  ContextScope scope(*p->context_);
  p->class_name_ = ckpt.class_name();
  p->kontext_ = ckpt.class_name() == "FluxKontextPipeline";
  p->options_ = options;
  p->tokenizer_ = std::make_unique<CLIPTokenizer>(CLIPTokenizer::from_pretrained(ckpt.component_dir("tokenizer")));
  p->text_encoder_ = CLIPTextModel::from_pretrained(ckpt.component_dir("text_encoder"), options.dtype, options.device);
  p->tokenizer_2_ = std::make_unique<T5Tokenizer>(T5Tokenizer::from_pretrained(ckpt.component_dir("tokenizer_2")));
  p->text_encoder_2_ =
      T5EncoderModel::from_pretrained(ckpt.component_dir("text_encoder_2"), options.dtype, options.device);
  p->transformer_ = FluxTransformer2DModel::from_pretrained(ckpt.component_dir("transformer"), options.dtype,
                                                            options.device);
  p->transformer_->enable_cuda_graphs(p->context_->settings().cuda_graphs && options.device.is_cuda());
  p->vae_ = AutoencoderKL::from_pretrained(ckpt.component_dir("vae"), options.vae_dtype_or(options.dtype),
                                        options.device);
  p->scheduler_config_ = ckpt.component_config("scheduler");
  p->scheduler_ = make_scheduler(p->scheduler_config_, ckpt.component_config_path("scheduler"), options.scheduler);

  const auto& tcfg = p->transformer_->config();
  const auto& vcfg = p->vae_->config();
  if (tcfg.in_channels != 4 * vcfg.latent_channels || tcfg.out_channels != tcfg.in_channels)
    fail("{}: transformer in_channels {} / out_channels {} must be 4 x the VAE's latent_channels {} (2x2 packing)",
         ckpt.root(), tcfg.in_channels, tcfg.out_channels, vcfg.latent_channels);
  if (tcfg.joint_attention_dim != p->text_encoder_2_->config().d_model)
    fail("{}: transformer joint_attention_dim {} does not match text_encoder_2's d_model {}", ckpt.root(),
         tcfg.joint_attention_dim, p->text_encoder_2_->config().d_model);
  if (tcfg.pooled_projection_dim != p->text_encoder_->config().hidden_size)
    fail("{}: transformer pooled_projection_dim {} does not match text_encoder's hidden_size {}", ckpt.root(),
         tcfg.pooled_projection_dim, p->text_encoder_->config().hidden_size);
  if (!vcfg.shift_factor)
    fail("{}/vae/config.json: shift_factor is null; FLUX pipelines unscale the latents with it", ckpt.root());

  // The facts of diffusers' FluxPipeline / FluxKontextPipeline defaults and the model cards:
  // 1024x1024 (default_sample_size 128 x vae_scale_factor 8); dev 28 steps, guidance 3.5,
  // 512 tokens; schnell (no guidance embedding) 4 steps, 256 tokens, guidance unused.
  PipelineCapabilities& c = p->capabilities_;
  c.tasks = {"text-to-image"};
  if (p->kontext_) {
    c.tasks.push_back("image-to-image");
    c.image_input = true;
  }
  c.default_fps = 1.0;  // one frame; not a video
  c.temporal_multiple = 1;
  c.spatial_multiple = vcfg.scale_factor() * 2;
  c.default_height = c.default_width = 128 * vcfg.scale_factor();
  c.default_num_frames = 1;
  const bool schnell = !tcfg.guidance_embeds;
  c.default_num_inference_steps = schnell ? 4 : 28;
  c.default_guidance_scale = schnell ? 0.0 : 3.5;
  c.default_max_sequence_length = schnell ? 256 : 512;

  p->description_ = {
      {"pipeline", fmt::format("{} ({}{})", ckpt.class_name(), c.task_list(),
                               schnell ? "; no guidance embedding (schnell)" : "; guidance-distilled (dev)")},
      {"model", ckpt.root()},
      {"device", options.device.str()},
      {"compute dtype", fmt::format("{} (VAE {})", dtype_name(options.dtype), dtype_name(options.vae_dtype_or(options.dtype)))},
      {"text_encoder", fmt::format("{}: {} layers, width {}", ckpt.component("text_encoder").class_name,
                                   p->text_encoder_->config().num_hidden_layers,
                                   p->text_encoder_->config().hidden_size)},
      {"text_encoder_2", fmt::format("{}: {} layers, d_model {}", ckpt.component("text_encoder_2").class_name,
                                     p->text_encoder_2_->config().num_layers, p->text_encoder_2_->config().d_model)},
      {"transformer", fmt::format("{}: {} double + {} single blocks, {} heads x {}, in {} ch",
                                  ckpt.component("transformer").class_name, tcfg.num_layers, tcfg.num_single_layers,
                                  tcfg.num_attention_heads, tcfg.attention_head_dim, tcfg.in_channels)},
      {"vae", fmt::format("{}: {} latent channels, x{}", ckpt.component("vae").class_name, vcfg.latent_channels,
                          vcfg.scale_factor())},
      {"scheduler", p->scheduler_->name()},
  };
  return p;
}

std::optional<int64_t> FluxPipeline::prompt_token_count(const std::string& prompt) const {
  // The T5 tokens (the longer of the two limits; CLIP is always cut at 77, as diffusers does).
  return static_cast<int64_t>(tokenizer_2_->encode(prompt).size());
}

bool FluxPipeline::first_size_warning(int64_t width, int64_t height) const {
  const std::lock_guard<std::mutex> lock(size_warning_mutex_);
  if (last_size_warned_ == std::make_pair(width, height)) return false;
  last_size_warned_ = {width, height};
  return true;
}

ResolvedParams FluxPipeline::resolve(const GenerationParams& params) const {
  ContextScope scope(*context_);
  const PipelineCapabilities& c = capabilities_;
  ResolvedParams r;
  r.prompt = params.prompt;
  // No negative prompt unless given: FLUX runs true CFG only with true_cfg_scale > 1 and one
  // (diffusers: `negative_prompt is not None`, so "" counts).
  r.negative_prompt = params.negative_prompt.value_or("");
  r.negative_prompt_given = params.negative_prompt.has_value();
  if (params.image.defined()) {
    if (!c.image_input) fail("image: this model ({}) takes no image; it does {}", class_name_, c.task_list());
    VGEN_CHECK(params.image.dim() == 3 && params.image.size(2) == 3 && params.image.dtype() == DType::U8,
               "image must be U8 [height, width, 3] RGB, got {}", params.image.str());
    r.image = params.image;
  }
  if (params.last_image.defined()) fail("last_image: {} takes no last image", class_name_);
  r.height = params.height.value_or(c.default_height);
  r.width = params.width.value_or(c.default_width);
  const int64_t m = c.spatial_multiple;
  if (r.height <= 0) fail("height must be positive (got {})", r.height);
  if (r.width <= 0) fail("width must be positive (got {})", r.width);
  if (!kontext_ && (r.height % m != 0 || r.width % m != 0)) {
    // FluxPipeline warns and rounds each side down to the multiple (prepare_latents:
    // 2 * (height // (vae_scale_factor * 2))); the image comes out at the rounded size.
    const int64_t h = r.height / m * m, w = r.width / m * m;
    if (h == 0) fail("height must be at least {} (got {})", m, r.height);
    if (w == 0) fail("width must be at least {} (got {})", m, r.width);
    if (first_size_warning(r.width, r.height))
      std::cerr << fmt::format("warning: height and width must be multiples of {}: {}x{} runs as {}x{} (as diffusers "
                               "resizes them)\n",
                               m, r.width, r.height, w, h);
    r.height = h;
    r.width = w;
  }
  if (kontext_) {
    // FluxKontextPipeline: the requested size scaled to max_area (1024^2) at its aspect ratio,
    // each side rounded down to the multiple (diffusers warns that it adjusted them).
    const double max_area = 1024.0 * 1024.0, aspect = static_cast<double>(r.width) / static_cast<double>(r.height);
    const int64_t w = std::llround(std::sqrt(max_area * aspect)) / m * m;
    const int64_t h = std::llround(std::sqrt(max_area / aspect)) / m * m;
    if (w == 0 || h == 0)
      fail("height and width: {}x{} is too far from square (FluxKontextPipeline's max_area makes it {}x{})", r.width,
           r.height, w, h);
    if ((w != r.width || h != r.height) && first_size_warning(r.width, r.height))
      std::cerr << fmt::format("warning: {}x{} adjusted to {}x{} (FluxKontextPipeline's max_area 1024x1024)\n",
                               r.width, r.height, w, h);
    r.width = w;
    r.height = h;
  }
  r.num_frames = params.num_frames.value_or(1);
  if (r.num_frames != 1) fail("num_frames must be 1 for {} (it makes images), got {}", class_name_, r.num_frames);
  r.num_inference_steps = params.num_inference_steps.value_or(c.default_num_inference_steps);
  if (params.timesteps) fail("timesteps: {} takes sigmas (as diffusers' __call__), not timesteps", class_name_);
  if (params.sigmas) {
    const std::vector<double>& s = *params.sigmas;
    if (s.empty() || s.size() > 1000) fail("sigmas must have between 1 and 1000 values, got {}", s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (!(s[i] > 0.0 && s[i] <= 1.0)) fail("sigmas[{}] must be in (0, 1], got {}", i, s[i]);
      if (i > 0 && !(s[i] < s[i - 1])) fail("sigmas must be strictly decreasing, but sigmas[{}] = {} follows {}", i, s[i], s[i - 1]);
    }
    if (params.num_inference_steps && *params.num_inference_steps != static_cast<int>(s.size()))
      fail("num_inference_steps is {}, but the sigmas given have {} values", *params.num_inference_steps, s.size());
    r.num_inference_steps = static_cast<int>(s.size());
    r.sigmas = s;
  }
  if (params.boundary_step) fail("boundary_step applies to two-expert models only");
  if (params.guidance_scale_2) fail("guidance_scale_2 applies to two-expert models only");
  if (r.num_inference_steps < 1 || r.num_inference_steps > 1000)
    fail("num_inference_steps must be between 1 and 1000, got {}", r.num_inference_steps);
  r.guidance_scale = params.guidance_scale.value_or(c.default_guidance_scale);
  r.guidance_scale_2 = r.guidance_scale;
  if (!(r.guidance_scale >= 0.0 && r.guidance_scale <= 100.0))
    fail("guidance_scale must be between 0 and 100, got {}", r.guidance_scale);
  r.true_cfg_scale = params.true_cfg_scale.value_or(1.0);
  if (!(r.true_cfg_scale >= 0.0 && r.true_cfg_scale <= 100.0))
    fail("true_cfg_scale must be between 0 and 100, got {}", r.true_cfg_scale);
  if (params.guidance_rescale != 0.0) fail("guidance_rescale: {} has no such argument (leave it 0)", class_name_);
  r.max_sequence_length = params.max_sequence_length.value_or(c.default_max_sequence_length);
  if (r.max_sequence_length < 1 || r.max_sequence_length > 512)
    fail("max_sequence_length must be between 1 and 512 (diffusers' FluxPipeline limit), got {}",
         r.max_sequence_length);
  check_no_cache(params.cache.value_or(options_.cache), class_name_);
  r.seed = params.seed;
  if (params.latents.defined()) {
    const Shape u = latent_shape(r);
    const Shape packed = {1, (u[2] / 2) * (u[3] / 2), u[1] * 4};
    if (params.latents.shape() != packed)
      fail("latents have shape {}, but {}x{} needs the packed {} (diffusers' latents=)",
           shape_str(params.latents.shape()), r.width, r.height, shape_str(packed));
    r.latents = params.latents;
  }
  return r;
}

Shape FluxPipeline::latent_shape(const ResolvedParams& p) const {
  const int64_t f = vae_->config().scale_factor();
  return {1, vae_->config().latent_channels, 2 * (p.height / (f * 2)), 2 * (p.width / (f * 2))};
}

FluxPipeline::PromptEmbeds FluxPipeline::encode_prompt(const std::vector<std::string>& prompts,
                                                       int max_sequence_length) const {
  ContextScope scope(*context_);
  const Device device = options_.device;
  // CLIP: padded to model_max_length (77), truncated; pooler_output.
  const int64_t clip_len = tokenizer_->model_max_length();
  const TokenizerOutput clip_tokens =
      (*tokenizer_)(prompts, clip_len, [&](size_t i, const std::string& removed) {
        std::cerr << fmt::format(
            "warning: the part of prompt {} beyond CLIP's {} tokens was truncated: \"{}\"\n", i, clip_len, removed);
      });
  PromptEmbeds out;
  out.pooled = text_encoder_->forward(clip_tokens.input_ids.to(device)).pooler_output.to(options_.dtype);
  // T5: padded to max_sequence_length, no attention mask (padding attended, as diffusers).
  const TokenizerOutput t5_tokens = (*tokenizer_2_)(prompts, max_sequence_length);
  out.prompt_embeds = text_encoder_2_->forward(t5_tokens.input_ids.to(device)).to(options_.dtype);
  return out;
}

Tensor FluxPipeline::preprocess_image(const Tensor& image) const {
  // get_default_height_width (down to a multiple of vae_scale_factor * 2), the preferred
  // resolution nearest its aspect ratio (_auto_resize), then resize + preprocess (Lanczos).
  const int64_t multiple = vae_->config().scale_factor() * 2;
  const int64_t h0 = image.size(0) / multiple * multiple, w0 = image.size(1) / multiple * multiple;
  VGEN_CHECK(h0 > 0 && w0 > 0, "image: {}x{} is smaller than {} pixels", image.size(1), image.size(0), multiple);
  const auto [w, h] = kontext_image_size(w0, h0, multiple);
  media::VaeImageProcessorConfig config;
  config.vae_scale_factor = multiple;
  return media::VaeImageProcessor(config).preprocess(image, h, w);
}

Tensor FluxPipeline::encode_image_latents(const Tensor& image) const {
  ContextScope scope(*context_);
  // retrieve_latents(sample_mode="argmax"): the mean; then (z - shift_factor) * scaling_factor.
  const auto& vcfg = vae_->config();
  const Tensor mean = vae_->encode(image.to(vae_->dtype())).mean.to(DType::F32);
  const Tensor z = ops::scale(ops::add_scalar(mean, -static_cast<float>(*vcfg.shift_factor)),
                              static_cast<float>(vcfg.scaling_factor));
  return flux_pack_latents(z);
}

Tensor FluxPipeline::decode_latents(const Tensor& unpacked) const {
  ContextScope scope(*context_);
  const auto& vcfg = vae_->config();
  // latents / scaling_factor + shift_factor (float32 latents, as the scheduler keeps them).
  const Tensor z = ops::add_scalar(ops::div(unpacked.to(DType::F32),
                                            Tensor::full({1}, static_cast<float>(vcfg.scaling_factor), DType::F32,
                                                         unpacked.device())),
                                   static_cast<float>(*vcfg.shift_factor));
  return vae_->decode(z.to(vae_->dtype()));
}

GenerationOutput FluxPipeline::generate(const ResolvedParams& r, const StepCallback& on_step) {
  ContextScope scope(*context_);
  const Device device = options_.device;
  const auto& tcfg = transformer_->config();
  GenerationOutput out;
  out.fps = capabilities_.default_fps;

  auto start = std::chrono::steady_clock::now();
  const bool true_cfg = r.true_cfg_scale > 1.0 && (r.negative_prompt_given || !r.negative_prompt.empty());
  if (r.true_cfg_scale > 1.0 && !true_cfg)
    spdlog::warn("true_cfg_scale {} without a negative prompt: true CFG does not run (as in diffusers); give one, "
                 "\"\" included, to run it", r.true_cfg_scale);
  const PromptEmbeds pos = encode_prompt({r.prompt}, r.max_sequence_length);
  PromptEmbeds neg;
  if (true_cfg) neg = encode_prompt({r.negative_prompt}, r.max_sequence_length);
  ops::synchronize(device);
  out.timings.emplace_back("encode_prompt", seconds_since(start));

  // Kontext: the reference image's packed latents and ids (first axis 1).
  Tensor image_latents, image_ids;
  if (r.image.defined()) {
    start = std::chrono::steady_clock::now();
    const Tensor image = preprocess_image(r.image);
    image_latents = encode_image_latents(image).to(device);
    const int64_t f = vae_->config().scale_factor();
    image_ids = flux_latent_image_ids(image.size(2) / f / 2, image.size(3) / f / 2, 1.0f);
    ops::synchronize(device);
    out.timings.emplace_back("encode_image", seconds_since(start));
  }

  start = std::chrono::steady_clock::now();
  const Shape shape = latent_shape(r);
  const int64_t h = shape[2], w = shape[3];
  Tensor latents = r.latents.defined() ? r.latents.to(DType::F32).to(device)
                                       : flux_pack_latents(randn(shape, r.seed)).to(device);
  VGEN_CHECK(latents.shape() == (Shape{1, (h / 2) * (w / 2), shape[1] * 4}), "latents {} for a {}x{} image",
             latents.str(), r.width, r.height);
  Tensor img_ids = flux_latent_image_ids(h / 2, w / 2);
  if (image_ids.defined()) img_ids = ops::cat({img_ids, image_ids}, 0);
  const Tensor txt_ids = Tensor::zeros({r.max_sequence_length, 3});

  // sigmas = linspace(1, 1 / N, N) unless given; mu from the noise tokens only.
  std::vector<double> sigmas;
  if (r.sigmas) {
    sigmas = *r.sigmas;
  } else {
    // numpy's linspace: start + i * step, the last value exactly `stop`.
    const int N = r.num_inference_steps;
    const double stop = 1.0 / N, step = N > 1 ? (stop - 1.0) / (N - 1) : 0.0;
    for (int i = 0; i < N; ++i) sigmas.push_back(i == N - 1 ? stop : static_cast<double>(i) * step + 1.0);
  }
  const Json& sc = scheduler_config_;
  const double mu = flux_calculate_shift(latents.size(1), config_number(sc, "base_image_seq_len", 256),
                                         config_number(sc, "max_image_seq_len", 4096),
                                         config_number(sc, "base_shift", 0.5), config_number(sc, "max_shift", 1.15));
  scheduler_->set_timesteps(ScheduleRequest{r.num_inference_steps, std::nullopt, sigmas, mu});

  // The timestep and guidance stay on the host: the transformer reads them there to build
  // their embeddings, and a device copy would make every step wait for the previous one.
  const Tensor guidance = tcfg.guidance_embeds ? Tensor::full({1}, static_cast<float>(r.guidance_scale)) : Tensor();
  DenoiseConfig loop;
  loop.guidance_scale = true_cfg ? r.true_cfg_scale : 1.0;
  loop.guidance_scale_2 = loop.guidance_scale;
  const int64_t S = latents.size(1);
  const DenoiseFn predict = [&](const Tensor& x, double t, Branch branch, int) {
    // `timestep = t.expand(B).to(latents.dtype)`, then `timestep / 1000` in that dtype.
    const DType dt = options_.dtype;
    const float ts = round_to(round_to(static_cast<float>(t), dt) / 1000.0f, dt);
    const Tensor timestep = Tensor::full({1}, ts);
    Tensor input = x.to(options_.dtype);
    if (image_latents.defined()) input = ops::cat({input, image_latents.to(options_.dtype)}, 1);
    const PromptEmbeds& e = branch == Branch::Conditional ? pos : neg;
    Tensor noise = transformer_->forward(input, e.prompt_embeds, e.pooled, timestep, img_ids, txt_ids, guidance);
    if (image_latents.defined()) noise = noise.narrow(1, 0, S).contiguous();
    return noise.to(DType::F32);
  };
  const Tensor denoised = run_denoising_loop(*scheduler_, latents, loop, predict, on_step);
  ops::synchronize(device);
  out.timings.emplace_back("denoise", seconds_since(start));

  start = std::chrono::steady_clock::now();
  out.denoised_latents = flux_unpack_latents(denoised, h, w);
  const Tensor image = decode_latents(out.denoised_latents);
  out.video = image.unsqueeze(2);  // [1, 3, 1, H, W]: one frame
  out.frames = media::video_to_uint8_frames(out.video.to(Device::cpu()));
  ops::synchronize(device);
  out.timings.emplace_back("decode", seconds_since(start));
  return out;
}

}  // namespace vgen
