#include "pipelines/wan/pipeline_wan.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "core/random.h"
#include "media/frames.h"
#include "media/image_processor.h"
#include "ops/ops.h"
#include "pipelines/cache/step_cache.h"
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

// What a Wan checkpoint is, from model_index.json and its transformer: the pipeline class,
// whether the image is concatenated to the latents or replaces the first latent frame, the
// expert boundary.
struct WanVariant {
  bool image_to_video_class = false;  // WanImageToVideoPipeline
  bool expand_timesteps = false;      // Wan2.2 TI2V
  bool concat_condition = false;      // in_channels = 2 z + 4: Wan2.1 I2V, Wan2.2 I2V-A14B
  bool clip = false;                  // CLIP image tokens (Wan2.1 I2V, FLF2V)
  bool first_last_frame = false;      // FLF2V: pos_embed over a first and a last image
  std::optional<double> boundary_ratio;
};

// The facts of each Wan checkpoint: what diffusers' pipelines default to and check, the frame
// rate of the Wan examples' export_to_video, the sizes wan.md gives per model.
PipelineCapabilities wan_capabilities(const WanVariant& v, const WanTransformer3DModelConfig& tcfg,
                                      const AutoencoderKLWanConfig& vcfg) {
  PipelineCapabilities c;
  if (v.image_to_video_class) {
    c.tasks = {"image-to-video"};
    c.image_input = c.image_required = true;
    // diffusers' last_image: the concatenated condition's last frame. With CLIP tokens only a
    // first-last-frame transformer (pos_embed over both images' tokens) takes it: diffusers'
    // Wan2.1 I2V fails on the second image's tokens.
    c.last_image_input = v.concat_condition && (!v.clip || v.first_last_frame);
    c.last_image_required = v.first_last_frame;
    if (c.last_image_input) c.tasks.push_back("first-last-frame-to-video");
  } else {
    c.tasks = {"text-to-video"};
    if (v.expand_timesteps) {  // TI2V: the same checkpoint takes an optional first frame
      c.tasks.push_back("image-to-video");
      c.image_input = true;
    }
  }
  c.two_experts = v.boundary_ratio.has_value();
  c.lora = true;  // adapters fuse into the transformer(s) at load (PipelineOptions::lora, lora_2)
  c.default_fps = v.expand_timesteps ? 24.0 : 16.0;
  // Both factors come from the VAE config, as in diffusers.
  c.temporal_multiple = vcfg.scale_factor_temporal;
  c.spatial_multiple = vcfg.scale_factor_spatial * tcfg.patch_size[1];
  c.default_num_frames = 81;
  c.default_num_inference_steps = 50;
  c.default_guidance_scale = 5.0;
  c.default_max_sequence_length = 512;
  if (v.expand_timesteps) {  // Wan2.2 TI2V-5B
    c.default_height = 704;
    c.default_width = 1280;
    c.default_num_frames = 121;
  } else if (c.two_experts) {  // Wan2.2 A14B
    c.default_height = 720;
    c.default_width = 1280;
    c.default_num_inference_steps = 40;
    c.default_guidance_scale = 4.0;
    c.default_guidance_scale_2 = 3.0;
  } else if (v.image_to_video_class) {  // Wan2.1 I2V: diffusers' call defaults (480P)
    c.default_height = 480;
    c.default_width = 832;
  } else {
    // The 14B models (dim 5120) default to 720p, the 1.3B ones to 480p.
    const bool large = tcfg.num_attention_heads * tcfg.attention_head_dim >= 5120;
    c.default_height = large ? 720 : 480;
    c.default_width = large ? 1280 : 832;
  }
  return c;
}

// Reads boundary_ratio and expand_timesteps from model_index.json.
WanVariant read_variant(const DiffusersCheckpoint& ckpt) {
  const Json& index = ckpt.model_index();
  const std::string path = ckpt.root() + "/model_index.json";
  WanVariant v;
  v.image_to_video_class = ckpt.class_name() == "WanImageToVideoPipeline";
  if (index.contains("boundary_ratio") && !index.at("boundary_ratio").is_null()) {
    if (!index.at("boundary_ratio").is_number()) fail("{}: boundary_ratio must be a number", path);
    const double b = index.at("boundary_ratio").get<double>();
    if (!(b > 0.0 && b < 1.0))
      fail("{}: boundary_ratio {} is out of range: it must be in (0, 1) (0.875 for T2V-A14B, 0.9 for I2V-A14B)",
           path, b);
    v.boundary_ratio = b;
  }
  if (index.contains("expand_timesteps") && !index.at("expand_timesteps").is_null()) {
    if (!index.at("expand_timesteps").is_boolean()) fail("{}: expand_timesteps must be true or false", path);
    v.expand_timesteps = index.at("expand_timesteps").get<bool>();
  }
  if (v.boundary_ratio && !ckpt.has_component("transformer_2"))
    fail("{}: boundary_ratio is set (two experts) but there is no 'transformer_2' component", path);
  if (!v.boundary_ratio && ckpt.has_component("transformer_2"))
    fail("{}: 'transformer_2' is present but boundary_ratio is not set: which expert runs when is unknown", path);
  return v;
}

// The second expert must take the same inputs as the first.
void check_same_interface(const std::string& root, const WanTransformer3DModelConfig& a,
                          const WanTransformer3DModelConfig& b) {
  if (a.in_channels != b.in_channels || a.out_channels != b.out_channels || a.patch_size != b.patch_size ||
      a.text_dim != b.text_dim || a.image_dim != b.image_dim)
    fail("{}: transformer_2 takes other inputs than transformer (in/out channels {}/{} vs {}/{}, text_dim {} vs {})",
         root, a.in_channels, a.out_channels, b.in_channels, b.out_channels, a.text_dim, b.text_dim);
}

// The sizes of diffusers' image-to-video examples when the caller gives none: the family's
// default area at the image's aspect ratio, rounded down to the spatial multiple.
std::pair<int64_t, int64_t> size_from_image(const Tensor& image, const PipelineCapabilities& c) {
  const double max_area = static_cast<double>(c.default_height * c.default_width);
  const double aspect = static_cast<double>(image.size(0)) / static_cast<double>(image.size(1));
  const int64_t m = c.spatial_multiple;
  const int64_t h = static_cast<int64_t>(std::nearbyint(std::sqrt(max_area * aspect))) / m * m;
  const int64_t w = static_cast<int64_t>(std::nearbyint(std::sqrt(max_area / aspect))) / m * m;
  return {h, w};
}

void check_image(const Tensor& image, const char* name) {
  if (image.dtype() != DType::U8 || image.dim() != 3 || image.size(2) != 3 || image.size(0) < 1 || image.size(1) < 1)
    fail("{} must be a decoded RGB image (uint8 [height, width, 3]), got {}", name, image.str());
}

// TeaCache's published rescaling coefficients for Wan2.1 (wan.md, TeaCache4Wan2.1), highest
// power first: {use_ret_steps, plain}.
struct TeaCacheTable {
  const char* model;
  std::vector<double> ret_steps, plain;
};
const TeaCacheTable kTeaCacheT2V13B = {
    "Wan2.1 T2V 1.3B",
    {-5.21862437e4, 9.23041404e3, -5.28275948e2, 1.36987616e1, -4.99875664e-2},
    {2.39676752e3, -1.31110545e3, 2.01331979e2, -8.29855975, 1.37887774e-1}};
const TeaCacheTable kTeaCacheT2V14B = {
    "Wan2.1 T2V 14B",
    {-3.03318725e5, 4.90537029e4, -2.65530556e3, 5.87365115e1, -3.15583525e-1},
    {-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404}};
const TeaCacheTable kTeaCacheI2V480 = {
    "Wan2.1 I2V 480P",
    {2.57151496e5, -3.54229917e4, 1.40286849e3, -1.35890334e1, 1.32517977e-1},
    {-3.02331670e2, 2.23948934e2, -5.25463970e1, 5.87348440, -2.01973289e-1}};
const TeaCacheTable kTeaCacheI2V720 = {
    "Wan2.1 I2V 720P",
    {8.10705460e3, 2.13393892e3, -3.72934672e2, 1.66203073e1, -4.17769401e-2},
    {-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683}};

// The published table for this transformer: the Wan2.1 T2V 1.3B / 14B and I2V 14B shapes (I2V:
// 480P up to 480x832 pixels, else 720P, as the two checkpoints are the same architecture);
// nullptr for every other model (Wan2.2, FLF2V, other sizes).
const TeaCacheTable* published_teacache(const WanTransformer3DModelConfig& c, bool two_experts, bool expand_timesteps,
                                        int64_t height, int64_t width) {
  if (two_experts || expand_timesteps || c.pos_embed_seq_len || c.attention_head_dim != 128) return nullptr;
  if (!c.image_dim && c.num_attention_heads == 12 && c.num_layers == 30 && c.ffn_dim == 8960) return &kTeaCacheT2V13B;
  if (c.num_attention_heads == 40 && c.num_layers == 40 && c.ffn_dim == 13824) {
    if (!c.image_dim) return &kTeaCacheT2V14B;
    return height * width <= 480 * 832 ? &kTeaCacheI2V480 : &kTeaCacheI2V720;
  }
  return nullptr;
}

// A step-cache config checked against a Wan model (an error names the field), TeaCache's published
// coefficients filled in when none are given.
void check_wan_cache(CacheConfig& cache, const WanTransformer3DModelConfig& tcfg, bool two_experts,
                     bool expand_timesteps, const std::string& class_name, int64_t height, int64_t width) {
  if (const auto p = cache.problem()) fail("cache_config.{}: {}", p->first, p->second);
  if (cache.cache_backend == CacheBackend::TeaCache) {
    const TeaCacheTable* table = published_teacache(tcfg, two_experts, expand_timesteps, height, width);
    if (cache.coefficients.empty()) {
      if (!table)
        fail("cache_config.coefficients: TeaCache has no published coefficients for this model ({}, {} layers, {} "
             "heads{}); give them (highest power first){}",
             class_name, tcfg.num_layers, tcfg.num_attention_heads, two_experts ? ", two experts" : "",
             two_experts ? ", and coefficients_2 for transformer_2" : "");
      cache.coefficients = cache.use_ret_steps ? table->ret_steps : table->plain;
    }
    if (two_experts && cache.coefficients_2.empty())
      fail("cache_config.coefficients_2: TeaCache on a two-expert model needs the coefficients of transformer_2 (none "
           "are published for Wan2.2)");
    if (!two_experts && !cache.coefficients_2.empty())
      fail("cache_config.coefficients_2: this model has one transformer (coefficients_2 is transformer_2's)");
  }
  // TaylorSeer: the hooks diffusers would place must be ones vgen runs (an error names the field).
  if (cache.cache_backend == CacheBackend::TaylorSeer)
    resolve_taylorseer_hooks(cache, WanTransformer3DModel::module_names(tcfg));
}

}  // namespace

std::unique_ptr<WanPipeline> WanPipeline::from_pretrained(const DiffusersCheckpoint& ckpt, const PipelineOptions& options,
                                                          std::shared_ptr<ExecutionContext> context) {
  const WanVariant v = read_variant(ckpt);
  for (const char* required : {"tokenizer", "text_encoder", "transformer", "vae", "scheduler"}) {
    if (!ckpt.has_component(required))
      fail("{}/model_index.json: {} needs a '{}' component", ckpt.root(), ckpt.class_name(), required);
  }
  {
    // The engine's cache_config is checked against this model before any weight loads, so that
    // a server does not load a model only to refuse every request. (The size only picks between
    // the I2V 480P and 720P tables, which both exist.)
    const std::string config_path = (std::filesystem::path(ckpt.component_dir("transformer")) / "config.json").string();
    CacheConfig cache = options.cache;
    check_wan_cache(cache, WanTransformer3DModelConfig::from_json(read_json_file(config_path), config_path),
                    v.boundary_ratio.has_value(), v.expand_timesteps, ckpt.class_name(), 480, 832);
  }
  std::unique_ptr<WanPipeline> p(new WanPipeline(std::move(context)));
  ContextScope scope(*p->context_);
  p->class_name_ = ckpt.class_name();
  p->options_ = options;
  p->boundary_ratio_ = v.boundary_ratio;
  p->expand_timesteps_ = v.expand_timesteps;
  p->tokenizer_ = std::make_unique<T5Tokenizer>(T5Tokenizer::from_pretrained(ckpt.component_dir("tokenizer")));
  p->text_encoder_dir_ = ckpt.component_dir("text_encoder");
  p->text_encoder_ = UMT5EncoderModel::from_pretrained(p->text_encoder_dir_, options.dtype, options.device);
  if (!options.lora_2.empty() && !v.boundary_ratio)
    fail("{}: LoRA adapters for transformer_2 (lora_2: {}) need a two-expert model; {} has one transformer",
         ckpt.root(), options.lora_2.front().path, ckpt.class_name());
  p->transformer_dirs_ = {ckpt.component_dir("transformer"),
                          v.boundary_ratio ? ckpt.component_dir("transformer_2") : std::string()};
  p->load_experts(options.lora, options.lora_2);
  if (p->transformer_2_) check_same_interface(ckpt.root(), p->transformer_->config(), p->transformer_2_->config());
  const auto& tcfg = p->transformer_->config();
  if (const int ulysses = p->context_->parallel().sizes().ulysses_size; tcfg.num_attention_heads % ulysses != 0)
    fail("{}: ulysses_size {} does not divide the transformer's {} attention heads (use a divisor of {}, and "
         "ring_size for the rest of the GPUs)",
         ckpt.root(), ulysses, tcfg.num_attention_heads, tcfg.num_attention_heads);
  // The image enters through the VAE encoder in every image-to-video variant.
  const bool image_input = v.image_to_video_class || v.expand_timesteps;
  // The VAE runs in float32 by default, as diffusers' Wan examples advise. Text-to-video only
  // decodes: the encoder's weights stay on disk.
  p->vae_ = AutoencoderKLWan::from_pretrained(ckpt.component_dir("vae"), options.vae_dtype_or(DType::F32), options.device,
                                             AutoencoderKLWan::Parts{.encoder = image_input, .decoder = true});
  p->vae_->set_decode_chunk_frames(options.vae_chunk_frames);
  p->scheduler_ = make_scheduler(ckpt.component_config("scheduler"), ckpt.component_config_path("scheduler"), options.scheduler);
  const auto& vcfg = p->vae_->config();
  if (tcfg.text_dim != p->text_encoder_->config().d_model)
    fail("{}: transformer text_dim {} does not match the text encoder's d_model {}", ckpt.root(), tcfg.text_dim,
         p->text_encoder_->config().d_model);

  const int64_t z = vcfg.z_dim;
  if (v.image_to_video_class && !v.expand_timesteps) {
    // [latents, mask (one channel per frame of a temporal block), image latents].
    const int64_t expected = 2 * z + vcfg.scale_factor_temporal;
    if (tcfg.in_channels != expected)
      fail("{}: WanImageToVideoPipeline needs transformer in_channels = 2 * z_dim + {} = {} (the latents, the mask "
           "and the image condition), got {}",
           ckpt.root(), vcfg.scale_factor_temporal, expected, tcfg.in_channels);
    p->concat_condition_ = true;
  } else if (tcfg.in_channels != z) {
    fail("{}: transformer in_channels {} does not match the VAE's z_dim {}", ckpt.root(), tcfg.in_channels, z);
  }
  if (tcfg.out_channels != z)
    fail("{}: transformer out_channels {} does not match the VAE's z_dim {}", ckpt.root(), tcfg.out_channels, z);
  WanVariant variant = v;
  variant.concat_condition = p->concat_condition_;
  if (tcfg.image_dim) {
    // Wan2.1 I2V: CLIP's image tokens condition every cross-attention.
    if (!v.image_to_video_class)
      fail("{}: the transformer takes CLIP image tokens (image_dim) but the pipeline is {}", ckpt.root(),
           ckpt.class_name());
    for (const char* required : {"image_encoder", "image_processor"}) {
      if (!ckpt.has_component(required))
        fail("{}/model_index.json: the transformer has image_dim {} (CLIP image tokens) but there is no '{}' component",
             ckpt.root(), *tcfg.image_dim, required);
    }
    p->image_encoder_ = CLIPVisionModel::from_pretrained(ckpt.component_dir("image_encoder"), options.dtype, options.device);
    p->image_processor_ =
        std::make_unique<CLIPImageProcessor>(CLIPImageProcessor::from_pretrained(ckpt.component_dir("image_processor")));
    if (p->image_encoder_->config().hidden_size != *tcfg.image_dim)
      fail("{}: the image encoder's hidden_size {} does not match the transformer's image_dim {}", ckpt.root(),
           p->image_encoder_->config().hidden_size, *tcfg.image_dim);
    variant.clip = true;
    variant.first_last_frame = tcfg.pos_embed_seq_len.has_value();
  }
  p->capabilities_ = wan_capabilities(variant, tcfg, vcfg);

  std::string pipeline = ckpt.class_name() + " (" + p->capabilities_.task_list();
  if (v.boundary_ratio)
    pipeline += fmt::format("; two experts, boundary_ratio {}{}", *v.boundary_ratio,
                            options.offload_idle_expert && options.device.is_cuda() ? ", the idle one in host memory" : "");
  pipeline += ")";
  auto transformer_row = [&](const std::string& name, const WanTransformer3DModelConfig& c) {
    return fmt::format("{}: {} layers, {} heads x {}, ffn {}, in {} ch{}; {}", ckpt.component(name).class_name,
                       c.num_layers, c.num_attention_heads, c.attention_head_dim, c.ffn_dim, c.in_channels,
                       c.image_dim ? fmt::format(", CLIP image_dim {}", *c.image_dim) : "",
                       describe_weights(ckpt, name));
  };
  p->description_ = {
      {"pipeline", pipeline},
      {"model", ckpt.root()},
      {"device", options.device.str()},
      {"compute dtype", fmt::format("{} (VAE {})", dtype_name(options.dtype), dtype_name(options.vae_dtype_or(DType::F32)))},
      {"tokenizer", ckpt.component("tokenizer").class_name},
      {"text_encoder", fmt::format("{}: {}", ckpt.component("text_encoder").class_name, describe_weights(ckpt, "text_encoder"))},
      {"transformer", transformer_row("transformer", tcfg)},
  };
  if (p->transformer_2_) p->description_.emplace_back("transformer_2", transformer_row("transformer_2", p->transformer_2_->config()));
  if (p->image_encoder_)
    p->description_.emplace_back("image_encoder", fmt::format("{}: {}", ckpt.component("image_encoder").class_name,
                                                              describe_weights(ckpt, "image_encoder")));
  p->description_.emplace_back(
      "vae", fmt::format("{}: z_dim {}, compression {}x{}x{}{}; {}", ckpt.component("vae").class_name, vcfg.z_dim,
                         vcfg.scale_factor_temporal, vcfg.scale_factor_spatial, vcfg.scale_factor_spatial,
                         image_input ? ", encoder and decoder" : ", decoder", describe_weights(ckpt, "vae")));
  p->description_.emplace_back("scheduler", p->scheduler_->name());
  return p;
}

std::vector<std::pair<std::string, std::string>> WanPipeline::describe() const {
  std::vector<std::pair<std::string, std::string>> d = description_;
  auto lora_row = [](const std::vector<nn::LoraAdapterSpec>& adapters) {
    std::string row;
    for (const nn::LoraAdapterSpec& a : adapters) row += fmt::format("{}{} (scale {})", row.empty() ? "" : ", ", a.path, a.scale);
    return row;
  };
  if (!lora_.empty()) d.emplace_back("lora", lora_row(lora_));
  if (!lora_2_.empty()) d.emplace_back("lora_2", lora_row(lora_2_));
  return d;
}

void WanPipeline::load_experts(const std::vector<nn::LoraAdapterSpec>& lora,
                               const std::vector<nn::LoraAdapterSpec>& lora_2) {
  const bool graphs = context_->settings().cuda_graphs && options_.device.is_cuda();
  // With offload_idle_expert both experts live in host memory; the first is uploaded now.
  const bool offload = options_.offload_idle_expert && !transformer_dirs_[1].empty() && options_.device.is_cuda();
  transformer_ = WanTransformer3DModel::from_pretrained(transformer_dirs_[0], options_.dtype, options_.device, offload,
                                                        lora, options_.lora_ignore_unmatched, options_.quant);
  transformer_->enable_cuda_graphs(graphs);
  transformer_->upload();
  if (!transformer_dirs_[1].empty()) {
    transformer_2_ = WanTransformer3DModel::from_pretrained(transformer_dirs_[1], options_.dtype, options_.device,
                                                            offload, lora_2, options_.lora_ignore_unmatched,
                                                            options_.quant);
    transformer_2_->enable_cuda_graphs(graphs);
  }
  lora_ = lora;
  lora_2_ = lora_2;
}

void WanPipeline::set_lora(const std::vector<nn::LoraAdapterSpec>& lora, const std::vector<nn::LoraAdapterSpec>& lora_2) {
  ContextScope scope(*context_);
  if (!lora_2.empty() && !transformer_2_)
    fail("LoRA adapters for transformer_2 (lora_2: {}) need a two-expert model; this one has one transformer",
         lora_2.front().path);
  if (lora == lora_ && lora_2 == lora_2_) return;
  if (prefetch_.valid()) prefetch_.get();
  // Files are read and their keys matched before the current weights go.
  for (const auto* specs : {&lora, &lora_2})
    if (!specs->empty()) nn::LoraSet(*specs, options_.lora_ignore_unmatched);
  // The current variant joins the cache, most recently used first; the cache keeps
  // lora_cached_variants - 1 of them beside the loaded one (the oldest go before a load).
  const size_t capacity = static_cast<size_t>(std::max(options_.lora_cached_variants, 1) - 1);
  cached_variants_.insert(cached_variants_.begin(),
                          ExpertVariant{lora_, lora_2_, std::move(transformer_), std::move(transformer_2_)});
  const auto take = [&](std::vector<ExpertVariant>::iterator it) {
    transformer_ = std::move(it->transformer);
    transformer_2_ = std::move(it->transformer_2);
    lora_ = it->lora;
    lora_2_ = it->lora_2;
    cached_variants_.erase(it);
  };
  for (auto it = cached_variants_.begin() + 1; it != cached_variants_.end(); ++it) {
    if (it->lora == lora && it->lora_2 == lora_2) {
      take(it);
      if (cached_variants_.size() > capacity) cached_variants_.resize(capacity);
      return;
    }
  }
  const std::vector<nn::LoraAdapterSpec> previous_lora = lora_, previous_lora_2 = lora_2_;
  if (cached_variants_.size() > capacity) cached_variants_.resize(capacity);
  try {
    load_experts(lora, lora_2);
  } catch (...) {
    // A file that fails only while merging (shapes against the weights): back to what served,
    // from the cache when it is there, else reloaded.
    transformer_.reset();
    transformer_2_.reset();
    if (!cached_variants_.empty()) {
      take(cached_variants_.begin());
    } else {
      load_experts(previous_lora, previous_lora_2);
    }
    throw;
  }
}

std::optional<int64_t> WanPipeline::prompt_token_count(const std::string& prompt) const {
  // As encode_prompt sees it: cleaned, then tokenized with </s>.
  return static_cast<int64_t>(tokenizer_->encode(wan_prompt_clean(prompt)).size());
}

namespace {

// A given timesteps / sigmas list: 1..1000 values, strictly decreasing (a repeated or rising
// value is not a denoising schedule; UniPC's solve would be singular), each in (0, max].
void check_schedule_list(const char* name, const std::vector<double>& v, double max) {
  if (v.empty() || v.size() > 1000) fail("{} must have between 1 and 1000 values, got {}", name, v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!(v[i] > 0.0 && v[i] <= max)) fail("{}[{}] must be in (0, {}], got {}", name, i, max, v[i]);
    if (i > 0 && !(v[i] < v[i - 1]))
      fail("{} must be strictly decreasing, but {}[{}] = {} follows {}", name, name, i, v[i], v[i - 1]);
  }
}

}  // namespace

void WanPipeline::resolve_schedule(const GenerationParams& params, ResolvedParams& r) const {
  const PipelineCapabilities& c = capabilities_;
  const double N = static_cast<double>(scheduler_->num_train_timesteps());
  if (params.timesteps) {
    if (!scheduler_->accepts_timesteps())
      fail("timesteps: the {} scheduler takes no timesteps (diffusers' takes sigmas only); pass sigmas, or choose "
           "the FlowMatchEulerDiscreteScheduler scheduler", scheduler_->name());
    check_schedule_list("timesteps", *params.timesteps, N);
  }
  if (params.sigmas) {
    if (!scheduler_->accepts_sigmas())
      fail("sigmas: the {} scheduler, as this checkpoint configures it, takes no sigmas (UniPC: only with "
           "use_flow_sigmas)", scheduler_->name());
    check_schedule_list("sigmas", *params.sigmas, 1.0);
  }
  if (params.timesteps && params.sigmas && params.timesteps->size() != params.sigmas->size())
    fail("timesteps ({} values) and sigmas ({} values) must have the same length", params.timesteps->size(),
         params.sigmas->size());
  if (params.timesteps || params.sigmas) {
    const int n = static_cast<int>(params.sigmas ? params.sigmas->size() : params.timesteps->size());
    if (params.num_inference_steps && *params.num_inference_steps != n)
      fail("num_inference_steps is {}, but the {} given have {} values (leave it unset: it follows their length)",
           *params.num_inference_steps, params.sigmas ? "sigmas" : "timesteps", n);
    r.num_inference_steps = n;
    r.timesteps = params.timesteps;
    r.sigmas = params.sigmas;
  }
  if (params.boundary_step) {
    if (!c.two_experts)
      fail("boundary_step applies to two-expert models (Wan2.2 A14B) only; this one has one transformer");
    if (*params.boundary_step < 0 || *params.boundary_step > r.num_inference_steps)
      fail("boundary_step must be between 0 and num_inference_steps ({}), got {}", r.num_inference_steps,
           *params.boundary_step);
    r.boundary_step = params.boundary_step;
  }
}

ResolvedParams WanPipeline::resolve(const GenerationParams& params) const {
  ContextScope scope(*context_);
  const auto& tcfg = transformer_->config();
  const PipelineCapabilities& c = capabilities_;
  ResolvedParams r;
  r.prompt = params.prompt;
  r.negative_prompt = params.negative_prompt.value_or(kWanDefaultNegativePrompt);
  r.negative_prompt_given = params.negative_prompt.has_value();

  // Images first: without height and width, an image sets them.
  if (params.image.defined()) {
    if (!c.image_input) fail("image: this model ({}) takes no image; it does {}", class_name_, c.task_list());
    check_image(params.image, "image");
    r.image = params.image;
  } else if (c.image_required) {
    fail("image: this model ({}) generates from an image: give the first frame", class_name_);
  }
  if (params.last_image.defined()) {
    if (!c.last_image_input)
      fail("last_image: this model ({}) takes no last frame; it does {}", class_name_, c.task_list());
    if (!params.image.defined()) fail("last_image needs an image (the first frame) too");
    // Another size than the first frame's is fine: both are resized to height x width.
    check_image(params.last_image, "last_image");
    r.last_image = params.last_image;
  } else if (c.last_image_required && params.image.defined()) {
    fail("last_image: this first-last-frame model ({}) needs the last frame too", class_name_);
  }
  if (r.image.defined() && (!params.height || !params.width)) {
    const auto [h, w] = size_from_image(r.image, c);
    r.height = params.height.value_or(h);
    r.width = params.width.value_or(w);
  } else {
    r.height = params.height.value_or(c.default_height);
    r.width = params.width.value_or(c.default_width);
  }
  r.num_frames = params.num_frames.value_or(c.default_num_frames);
  r.num_inference_steps = params.num_inference_steps.value_or(c.default_num_inference_steps);
  resolve_schedule(params, r);
  r.guidance_scale = params.guidance_scale.value_or(c.default_guidance_scale);
  if (params.guidance_scale_2 && !c.two_experts)
    fail("guidance_scale_2 applies to two-expert models (Wan2.2 A14B) only; this one has one transformer");
  // diffusers: guidance_scale_2 defaults to guidance_scale. The A14B defaults set both.
  r.guidance_scale_2 = params.guidance_scale_2.value_or(
      params.guidance_scale || !c.two_experts ? r.guidance_scale : c.default_guidance_scale_2);
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
  if (r.last_image.defined() && r.num_frames < 2)
    fail("num_frames must be at least 2 with a last_image (got {})", r.num_frames);
  if (r.num_inference_steps < 1 || r.num_inference_steps > 1000)
    fail("num_inference_steps must be between 1 and 1000, got {}", r.num_inference_steps);
  for (auto [name, value] : {std::pair{"guidance_scale", r.guidance_scale}, {"guidance_scale_2", r.guidance_scale_2}}) {
    if (!(value >= 0.0 && value <= 100.0)) fail("{} must be between 0 and 100, got {}", name, value);
  }
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
  r.cache = params.cache.value_or(options_.cache);
  check_wan_cache(r.cache, tcfg, c.two_experts, expand_timesteps_, class_name_, r.height, r.width);
  return r;
}

Shape WanPipeline::latent_shape(const ResolvedParams& p) const {
  const auto& vcfg = vae_->config();
  return {1, vcfg.z_dim, (p.num_frames - 1) / vcfg.scale_factor_temporal + 1,
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

std::pair<Tensor, Tensor> WanPipeline::latents_mean_and_inv_std(Device device) const {
  const auto& cfg = vae_->config();
  const int64_t z = cfg.z_dim;
  // diffusers' latents_std is 1 / std in float32 (it divides by it to decode, multiplies to encode).
  std::vector<float> inv_std(z), mean(cfg.latents_mean.begin(), cfg.latents_mean.end());
  for (int64_t c = 0; c < z; ++c) inv_std[c] = 1.0f / static_cast<float>(cfg.latents_std[c]);
  return {Tensor::from_vector(mean, {1, z, 1, 1, 1}).to(device), Tensor::from_vector(inv_std, {1, z, 1, 1, 1}).to(device)};
}

Tensor WanPipeline::decode_latents(const Tensor& latents) const {
  ContextScope scope(*context_);
  const auto [mean, inv_std] = latents_mean_and_inv_std(latents.device());
  // diffusers divides by 1/std rather than multiplying by std: keep its rounding.
  const Tensor x = ops::add(ops::div(latents.to(DType::F32), inv_std), mean);
  return vae_->decode(x.to(vae_->dtype()), options_.parallel_vae ? &context_->parallel().world() : nullptr);
}

WanTransformer3DModel& WanPipeline::make_room_for(int expert) {
  if (prefetch_.valid()) prefetch_.get();  // rethrows a failed upload
  // The device holds one expert at a time: the other one leaves first (released in this
  // context's order: its stream has the last reads of those weights queued).
  if (!transformer(expert).resident()) (expert == 1 ? *transformer_ : *transformer_2_).release();
  return expert == 1 ? *transformer_2_ : *transformer_;
}

void WanPipeline::make_resident(int expert) { make_room_for(expert).upload(); }

void WanPipeline::prefetch_expert(int expert) {
  WanTransformer3DModel& want = make_room_for(expert);
  if (want.resident()) return;
  // The upload runs on a stream of its own, so the copy overlaps what this context runs next.
  const ExecutionContext& ctx = *context_;
  prefetch_ = std::async(std::launch::async, [&want, device = ctx.device(), settings = ctx.settings()] {
    ExecutionContext transfer(device, settings);
    ContextScope scope(transfer);
    want.upload();
    ops::synchronize(device);  // done before the context (and its stream) goes away
  });
}

Tensor WanPipeline::normalize_latents(const Tensor& latents) const {
  // prepare_latents: (x - latents_mean) * latents_std, latents_std being 1 / std.
  const auto [mean, inv_std] = latents_mean_and_inv_std(latents.device());
  return ops::mul(ops::sub(latents.to(DType::F32), mean), inv_std);
}

Tensor WanPipeline::encode_image(const std::vector<Tensor>& images) const {
  ContextScope scope(*context_);
  VGEN_CHECK(image_encoder_ != nullptr, "{}: this checkpoint has no image encoder", class_name_);
  std::vector<Tensor> pixels;
  for (const Tensor& image : images) pixels.push_back(image_processor_->preprocess(image));
  const Tensor pixel_values = ops::cat(pixels, 0).to(options_.device).to(options_.dtype);
  return image_encoder_->penultimate_hidden_states(pixel_values).to(DType::F32);
}

Tensor WanPipeline::preprocess_image(const Tensor& image, int64_t height, int64_t width) const {
  // WanImageToVideoPipeline's VideoProcessor(vae_scale_factor=vae_scale_factor_spatial).
  media::VaeImageProcessorConfig config;
  config.vae_scale_factor = vae_->config().scale_factor_spatial;
  return media::VaeImageProcessor(config).preprocess(image, height, width);
}

Tensor WanPipeline::prepare_condition(const ResolvedParams& r) const {
  ContextScope scope(*context_);
  VGEN_CHECK(r.image.defined(), "{}: prepare_condition needs an image", class_name_);
  const Device device = options_.device;
  const Tensor image = preprocess_image(r.image, r.height, r.width).to(device).unsqueeze(2);  // [1, 3, 1, H, W]
  Tensor video;
  if (expand_timesteps_) {
    video = image;  // TI2V: the image alone is the first latent frame
  } else {
    // [image, zeros..., (last_image)] as one video of num_frames frames.
    std::vector<Tensor> parts = {image};
    const int64_t zeros = r.num_frames - 1 - (r.last_image.defined() ? 1 : 0);
    if (zeros > 0) parts.push_back(Tensor::zeros({1, 3, zeros, r.height, r.width}, DType::F32, device));
    if (r.last_image.defined())
      parts.push_back(preprocess_image(r.last_image, r.height, r.width).to(device).unsqueeze(2));
    video = ops::cat(parts, 2);
  }
  // retrieve_latents(sample_mode="argmax"): the mode of the latent distribution.
  const Tensor latent = normalize_latents(vae_->encode(video.to(vae_->dtype())));
  if (!concat_condition_) return latent;

  // The mask: 1 on the given frames (the first, and the last for FLF2V), the first frame
  // repeated scale_factor_temporal times, then folded into [1, 4, T, h, w] as diffusers does.
  const Shape shape = latent_shape(r);
  const int64_t T = shape[2], h = shape[3], w = shape[4], k = vae_->config().scale_factor_temporal;
  std::vector<float> mask(static_cast<size_t>(k * T * h * w), 0.0f);
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t t = 0; t < T; ++t) {
      // Frame c + k t of [first frame x k, frames 1..F-1], i.e. source frame c + k t - (k - 1).
      const int64_t frame = t == 0 ? 0 : c + k * t - (k - 1);
      const bool known = frame == 0 || (r.last_image.defined() && frame == r.num_frames - 1);
      if (known) std::fill_n(mask.begin() + ((c * T + t) * h * w), h * w, 1.0f);
    }
  }
  return ops::cat({Tensor::from_vector(mask, {1, k, T, h, w}).to(device), latent}, 1);
}

GenerationOutput WanPipeline::generate(const ResolvedParams& r, const StepCallback& on_step) {
  return std::move(run({&r}, on_step).front());
}

namespace {

// Whether b can share a denoising loop with a: everything but prompt and seed alike.
bool batch_compatible(const ResolvedParams& a, const ResolvedParams& b) {
  return !a.latents.defined() && !b.latents.defined() && !a.image.defined() && !b.image.defined() &&
         a.negative_prompt == b.negative_prompt && a.guidance_scale_2 == b.guidance_scale_2 && a.height == b.height && a.width == b.width && a.num_frames == b.num_frames &&
         a.num_inference_steps == b.num_inference_steps && a.guidance_scale == b.guidance_scale &&
         a.guidance_rescale == b.guidance_rescale && a.max_sequence_length == b.max_sequence_length &&
         a.timesteps == b.timesteps && a.sigmas == b.sigmas && a.boundary_step == b.boundary_step &&
         !a.cache.enabled() && !b.cache.enabled();  // a cache decides on the whole batch: cached requests run alone
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
  DenoiseConfig loop;
  loop.guidance_scale = r.guidance_scale;
  loop.guidance_scale_2 = r.guidance_scale_2;
  loop.guidance_rescale = r.guidance_rescale;
  if (boundary_ratio_) loop.boundary_timestep = *boundary_ratio_ * scheduler_->num_train_timesteps();
  // A hand-made ResolvedParams is checked here too: expert 1 needs a second transformer.
  if (r.boundary_step && !boundary_ratio_) fail("boundary_step applies to two-expert models only");
  loop.boundary_step = r.boundary_step;
  const bool cfg = loop.any_cfg();  // the negative prompt is encoded when a step runs CFG
  // diffusers' WanAttnProcessor takes the image tokens to be all but the last 512 of the context
  // (transformer_wan.py: `encoder_hidden_states.shape[1] - 512`), so with a CLIP image encoder
  // it is right at 512 text tokens only; vgen splits at the image tokens, as the original Wan
  // code does, whatever the text length.
  if (image_encoder_ && r.max_sequence_length != 512)
    spdlog::warn("max_sequence_length {}: diffusers' WanTransformer3DModel assumes 512 text tokens when it separates "
                 "the image tokens from the text, so for this model diffusers' frames differ from vgen's except at "
                 "512 (vgen splits at the image tokens, as the original Wan code does)",
                 r.max_sequence_length);
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

  // The image (one request: batch_compatible keeps image requests alone): CLIP's tokens for
  // Wan2.1 I2V, and the VAE-encoded condition.
  Tensor image_embeds, condition;
  if (r.image.defined()) {
    start = std::chrono::steady_clock::now();
    if (image_encoder_) {
      // FLF2V: both images' tokens, [2, L, D], which the transformer pairs up per video.
      image_embeds = encode_image(r.last_image.defined() ? std::vector<Tensor>{r.image, r.last_image}
                                                         : std::vector<Tensor>{r.image})
                         .to(options_.dtype);
    }
    condition = prepare_condition(r);
    ops::synchronize(device);
    timings.emplace_back("encode_image", seconds_since(start));
  }

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
  scheduler_->set_timesteps(ScheduleRequest{r.num_inference_steps, r.timesteps, r.sigmas, std::nullopt});
  std::optional<StepCache> cache;
  if (r.cache.enabled()) {
    cache.emplace(r.cache, static_cast<int>(scheduler_->timesteps().size()),
                  WanTransformer3DModel::module_names(transformer_->config()));
    if (cache->works_on_output() && !cache->taylorseer_hooks().predicts_output())
      spdlog::warn("cache_config: taylorseer's identifiers match no module of WanTransformer3DModel (as in "
                   "diffusers, whose default '^blocks.*attn' does not match blocks.N.attn1 / attn2 in full): every "
                   "call is computed; use_lite_mode: true predicts the output");
    loop.cache = &*cache;
  }

  // TI2V with an image: the first latent frame is the image's, (1 - mask) * condition +
  // mask * latents in diffusers with a 0/1 mask, i.e. that frame replaced exactly.
  const bool first_frame_condition = expand_timesteps_ && condition.defined();
  auto with_first_frame = [&](const Tensor& x) {
    Tensor y = x.clone();
    y.narrow(2, 0, 1).copy_(condition.to(DType::F32));
    return y;
  };
  const auto& tcfg = transformer_->config();
  const int64_t tokens_per_frame = (shape[3] / tcfg.patch_size[1]) * (shape[4] / tcfg.patch_size[2]);
  const int64_t tokens = (shape[2] / tcfg.patch_size[0]) * tokens_per_frame;
  // offload_idle_expert: the expert whose turn it is comes to the device (timed apart).
  double swap_seconds = 0.0;
  const auto ensure_resident = [&](int expert) {
    if (!transformer_2_) return;
    if (prefetch_.valid()) prefetch_.get();  // a prefetch in flight: wait (and rethrow its failure)
    if (transformer(expert).resident()) return;
    const auto swap_start = std::chrono::steady_clock::now();
    make_resident(expert);
    ops::synchronize(device);
    swap_seconds += seconds_since(swap_start);
  };
  const DenoiseFn predict = [&](const Tensor& x, double t, Branch branch, int expert) {
    ensure_resident(expert);
    const int64_t B = x.size(0);
    Tensor input = x;
    Tensor timestep;
    if (first_frame_condition) {
      input = with_first_frame(x);
      // expand_timesteps: one timestep per token, 0 on the first frame's tokens.
      std::vector<float> ts(static_cast<size_t>(B * tokens), static_cast<float>(t));
      for (int64_t b = 0; b < B; ++b) std::fill_n(ts.begin() + b * tokens, tokens_per_frame, 0.0f);
      timestep = Tensor::from_vector(ts, {B, tokens}).to(device);
    } else {
      // expand_timesteps without an image gives every token the same timestep: one per video.
      timestep = Tensor::full({B}, static_cast<float>(t), DType::F32, device);
    }
    if (concat_condition_) {
      const Tensor c = B == 1 ? condition : ops::cat(std::vector<Tensor>(static_cast<size_t>(B), condition), 0);
      input = ops::cat({input, c}, 1);
    }
    const Tensor& context = branch == Branch::Conditional ? prompt_embeds : negative_embeds;
    // The transformer runs in its compute dtype; the scheduler keeps float32 latents.
    if (cache && cache->works_on_output()) {
      // TaylorSeer: the whole call computed (the usual forward) or its output predicted.
      const auto forward = [&] {
        return transformer(expert).forward(input.to(options_.dtype), timestep, context, image_embeds);
      };
      return cache->run_output(branch, expert, forward).to(DType::F32);
    }
    if (cache) {
      const auto stack = [&](const Tensor& hidden, const Tensor& temb, const Tensor& timestep_proj, int64_t num_blocks,
                             const WanTransformer3DModel::BlockRange& blocks) {
        return cache->run(branch, expert, hidden, {temb, timestep_proj}, num_blocks, blocks);
      };
      return transformer(expert)
          .forward_with_stack(input.to(options_.dtype), timestep, context, image_embeds, stack)
          .to(DType::F32);
    }
    return transformer(expert).forward(input.to(options_.dtype), timestep, context, image_embeds).to(DType::F32);
  };
  Tensor denoised = run_denoising_loop(*scheduler_, latents, loop, predict, on_step);
  if (first_frame_condition) denoised = with_first_frame(denoised);
  ops::synchronize(device);
  timings.emplace_back("denoise", seconds_since(start));
  if (swap_seconds > 0.0) timings.emplace_back("expert_swap (in denoise)", swap_seconds);
  // The next generation starts with the first expert: its upload overlaps the decode.
  if (transformer_2_ && !transformer_->resident()) prefetch_expert(0);

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
  for (GenerationOutput& out : outputs) {
    out.timings = timings;
    if (cache) out.cache = cache->stats();
  }
  return outputs;
}

}  // namespace vgen
