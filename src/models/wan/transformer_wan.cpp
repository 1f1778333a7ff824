#include "models/wan/transformer_wan.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/execution_context.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "nn/weights.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "WanTransformer3DModel";

// Returns x as float32 (itself when it already is): diffusers' `.float()`.
Tensor f32(const Tensor& x) { return x.to(DType::F32); }

// Sequence parallelism: this rank's `shard` of `per` rows along `dim`, the tail past the end
// of x read as zeros (the padding that makes the ranks' shards equal).
Tensor shard_rows(const Tensor& x, int64_t dim, int64_t shard, int64_t per) {
  const int64_t n = x.size(dim), start = shard * per, have = std::clamp<int64_t>(n - start, 0, per);
  if (have == per) return x.narrow(dim, start, per);
  Shape pad_shape = x.shape();
  pad_shape[dim] = per - have;
  const Tensor pad = Tensor::zeros(pad_shape, x.dtype(), x.device());
  return have == 0 ? pad : ops::cat({x.narrow(dim, start, have), pad}, dim);
}

// WanAttention of a block: attn1 over the video tokens (RoPE applied by forward's caller),
// attn2 from the video tokens to the projected text (width inner_dim); both with the RMS
// qk-norm across heads and biased projections.
nn::AttentionOptions attention_options(const WanTransformer3DModelConfig& c, bool cross) {
  nn::AttentionOptions o;
  o.query_dim = c.inner_dim();
  o.heads = c.num_attention_heads;
  o.dim_head = c.attention_head_dim;
  if (cross) o.cross_attention_dim = c.inner_dim();
  o.qk_norm = true;
  o.eps = static_cast<float>(c.eps);
  if (cross) o.added_kv_proj_dim = c.added_kv_proj_dim;
  return o;
}

}  // namespace

WanTransformer3DModelConfig WanTransformer3DModelConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path);
  const std::string class_name = r.string("_class_name", kClassName);
  if (class_name != kClassName) fail("{}: _class_name is '{}', expected '{}'", path, class_name, kClassName);
  WanTransformer3DModelConfig c;
  c.image_dim = r.optional_integer("image_dim");
  c.added_kv_proj_dim = r.optional_integer("added_kv_proj_dim");
  c.pos_embed_seq_len = r.optional_integer("pos_embed_seq_len");
  const std::vector<int64_t> patch = r.integer_list("patch_size", {1, 2, 2});
  if (patch.size() != 3 || patch[0] <= 0 || patch[1] <= 0 || patch[2] <= 0)
    r.fail_value("patch_size", fmt::format("must be 3 positive integers (t, h, w), got {}", j.at("patch_size").dump()));
  c.patch_size = {patch[0], patch[1], patch[2]};
  c.num_attention_heads = r.integer("num_attention_heads", c.num_attention_heads, 1);
  c.attention_head_dim = r.integer("attention_head_dim", c.attention_head_dim, 1);
  if (c.attention_head_dim % 2 != 0)
    r.fail_value("attention_head_dim", fmt::format("must be even for the rotary embedding, got {}", c.attention_head_dim));
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  // diffusers: `out_channels = out_channels or in_channels`.
  const int64_t out_channels = r.optional_integer("out_channels", 0).value_or(0);
  c.out_channels = out_channels == 0 ? c.in_channels : out_channels;
  c.text_dim = r.integer("text_dim", c.text_dim, 1);
  c.freq_dim = r.integer("freq_dim", c.freq_dim, 1);
  c.ffn_dim = r.integer("ffn_dim", c.ffn_dim, 1);
  c.num_layers = r.integer("num_layers", c.num_layers, 0);
  c.cross_attn_norm = r.boolean("cross_attn_norm", c.cross_attn_norm);
  // diffusers 0.42 builds the across-heads RMSNorm of q and k whatever this says; accept only
  // the value the Wan checkpoints use rather than guess what another one would mean.
  if (r.present("qk_norm") && !r.has("qk_norm"))
    r.fail_value("qk_norm", "is null; only \"rms_norm_across_heads\" is supported");
  c.qk_norm = r.string("qk_norm", c.qk_norm);
  if (c.qk_norm != "rms_norm_across_heads")
    r.fail_value("qk_norm", fmt::format("is \"{}\"; only \"rms_norm_across_heads\" is supported", c.qk_norm));
  c.eps = r.number("eps", c.eps);
  if (!(c.eps > 0.0 && c.eps < 1.0)) r.fail_value("eps", fmt::format("must be in (0, 1), got {}", c.eps));
  c.rope_max_seq_len = r.integer("rope_max_seq_len", c.rope_max_seq_len, 1);
  // The image context is projected by condition_embedder.image_embedder (image_dim) and read by
  // the cross-attention's add_k/add_v projections (added_kv_proj_dim = inner_dim): one without
  // the other has no meaning in diffusers' model either (it splits the context at 512 text tokens).
  if (c.image_dim.has_value() != c.added_kv_proj_dim.has_value())
    r.fail_value(c.image_dim ? "added_kv_proj_dim" : "image_dim",
                 "image_dim and added_kv_proj_dim must be set together (Wan2.1 image-to-video) or both be null");
  if (c.image_dim && *c.image_dim <= 0) r.fail_value("image_dim", fmt::format("must be positive, got {}", *c.image_dim));
  if (c.added_kv_proj_dim && *c.added_kv_proj_dim != c.inner_dim())
    r.fail_value("added_kv_proj_dim", fmt::format("must equal num_attention_heads * attention_head_dim = {}, got {}",
                                                  c.inner_dim(), *c.added_kv_proj_dim));
  if (c.pos_embed_seq_len && !c.image_dim)
    r.fail_value("pos_embed_seq_len", "needs an image_dim (it embeds the positions of the image tokens)");
  if (c.pos_embed_seq_len && (*c.pos_embed_seq_len <= 0 || *c.pos_embed_seq_len % 2 != 0))
    r.fail_value("pos_embed_seq_len",
                 fmt::format("must be a positive even number (first and last image tokens), got {}", *c.pos_embed_seq_len));
  return c;
}

WanTransformer3DModel::Block::Block(const nn::Weights& weights, const std::string& prefix,
                                    const WanTransformer3DModelConfig& c)
    : scale_shift_table(weights.as(DType::F32).load(prefix + ".scale_shift_table", {1, 6, c.inner_dim()})),
      norm1(static_cast<float>(c.eps)),
      attn1(weights, prefix + ".attn1", attention_options(c, false)),
      norm2(c.cross_attn_norm ? nn::LayerNorm(weights.as(DType::F32), prefix + ".norm2", c.inner_dim(),
                                              static_cast<float>(c.eps))
                              : nn::LayerNorm()),
      attn2(weights, prefix + ".attn2", attention_options(c, true)),
      norm3(static_cast<float>(c.eps)),
      ffn_proj(weights, prefix + ".ffn.net.0.proj", c.inner_dim(), c.ffn_dim),
      ffn_out(weights, prefix + ".ffn.net.2", c.ffn_dim, c.inner_dim()) {}

WanTransformer3DModel::WanTransformer3DModel(WanTransformer3DModelConfig config, DType dtype, Device device)
    : config_(std::move(config)),
      dtype_(dtype),
      device_(device),
      rope_(config_.attention_head_dim, config_.rope_max_seq_len),
      norm_out_(static_cast<float>(config_.eps)) {
  // The graphed part of forward: inputs {hidden_states after the patch embedding, temb,
  // timestep_proj, projected text, RoPE cos, RoPE sin[, projected image tokens]}, params {batch, frames, height, width}.
  graphed_ = std::make_unique<GraphedCallable>(
      "WanTransformer3DModel", [this](const std::vector<Tensor>& in, const std::vector<int64_t>& p) {
        WanPatchedInput input;
        input.hidden_states = in[0];
        input.freqs_cos = in[4];
        input.freqs_sin = in[5];
        input.batch_size = p[0];
        input.post_patch_num_frames = p[1];
        input.post_patch_height = p[2];
        input.post_patch_width = p[3];
        WanConditioning cond;
        cond.temb = in[1];
        cond.timestep_proj = in[2];
        cond.encoder_hidden_states = in[3];
        if (in.size() > 6) cond.encoder_hidden_states_image = in[6];
        return finish(run_blocks(input, cond), cond, input);
      });
  graphed_->set_enabled(false);
}

void WanTransformer3DModel::enable_cuda_graphs(bool enable) { graphed_->set_enabled(enable); }

void WanTransformer3DModel::upload() {
  if (!offload_.defined() || offload_.resident()) return;
  offload_.upload();
  graphed_->clear();  // recorded against the previous device addresses
}

void WanTransformer3DModel::release() {
  if (!offload_.defined() || !offload_.resident()) return;
  graphed_->clear();  // its static buffers and recordings hold device memory and the old addresses
  offload_.release();
}

std::unique_ptr<WanTransformer3DModel> WanTransformer3DModel::from_pretrained(const std::string& dir, DType dtype,
                                                                              Device device, bool host_resident,
                                                                              const std::vector<nn::LoraAdapterSpec>& lora,
                                                                              bool lora_ignore_unmatched,
                                                                              const QuantConfig& quant) {
  if (host_resident && !device.is_cpu()) {
    // Built in host memory; what the loading kept is the set of weights HostOffload moves.
    StorageCapture capture;
    std::unique_ptr<WanTransformer3DModel> model =
        from_pretrained(dir, dtype, Device::cpu(), false, lora, lora_ignore_unmatched, quant);
    model->offload_ = nn::HostOffload(capture.live(), device);
    model->device_ = device;
    return model;
  }
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto model = std::unique_ptr<WanTransformer3DModel>(
      new WanTransformer3DModel(WanTransformer3DModelConfig::from_json(read_json_file(config_path), config_path),
                                dtype, device));
  const WanTransformer3DModelConfig& c = model->config_;
  const int64_t dim = c.inner_dim();
  const auto [pt, ph, pw] = c.patch_size;

  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights weights(store, dtype, device,
                            lora.empty() ? nullptr : std::make_shared<const nn::LoraSet>(lora, lora_ignore_unmatched),
                            quant.enabled() ? std::make_shared<const QuantConfig>(quant) : nullptr);
  const nn::Weights weights_f32 = weights.as(DType::F32);  // diffusers' _keep_in_fp32_modules

  model->patch_embedding_ = nn::Linear::from_conv(weights, "patch_embedding", {dim, c.in_channels, pt, ph, pw});
  model->time_embedder_linear_1_ =
      nn::Linear(weights_f32, "condition_embedder.time_embedder.linear_1", c.freq_dim, dim);
  model->time_embedder_linear_2_ = nn::Linear(weights_f32, "condition_embedder.time_embedder.linear_2", dim, dim);
  model->time_proj_ = nn::Linear(weights, "condition_embedder.time_proj", dim, 6 * dim);
  model->text_embedder_linear_1_ = nn::Linear(weights, "condition_embedder.text_embedder.linear_1", c.text_dim, dim);
  model->text_embedder_linear_2_ = nn::Linear(weights, "condition_embedder.text_embedder.linear_2", dim, dim);
  if (c.image_dim) {
    // FP32LayerNorm (eps 1e-5, with affine) kept in float32 like every norm1/norm2 in diffusers'
    // _keep_in_fp32_modules; FeedForward(mult=1, "gelu"): linear, exact gelu, linear.
    const std::string p = "condition_embedder.image_embedder.";
    if (c.pos_embed_seq_len) model->image_pos_embed_ = weights.load(p + "pos_embed", {1, *c.pos_embed_seq_len, *c.image_dim});
    model->image_norm1_ = nn::LayerNorm(weights_f32, p + "norm1", *c.image_dim, 1e-5f);
    model->image_ff_proj_ = nn::Linear(weights, p + "ff.net.0.proj", *c.image_dim, *c.image_dim);
    model->image_ff_out_ = nn::Linear(weights, p + "ff.net.2", *c.image_dim, dim);
    model->image_norm2_ = nn::LayerNorm(weights_f32, p + "norm2", dim, 1e-5f);
  }
  model->blocks_.reserve(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) model->blocks_.emplace_back(weights, fmt::format("blocks.{}", i), c);
  model->scale_shift_table_ = weights_f32.load("scale_shift_table", {1, 2, dim});
  model->proj_out_ = nn::Linear(weights, "proj_out", dim, c.out_channels * pt * ph * pw);

  // Like diffusers' `_keys_to_ignore_on_load_unexpected`, leftover norm_added_q weights are fine.
  weights.check_all_used(kClassName, config_path,
                         [](const std::string& name) { return name.find("norm_added_q") != std::string::npos; });
  return model;
}

WanRotaryPosEmbed::Tables WanTransformer3DModel::rotary_tables(int64_t frames, int64_t height, int64_t width) const {
  std::lock_guard<std::mutex> lock(rope_mutex_);
  if (rope_grid_ != std::array<int64_t, 3>{frames, height, width}) {
    WanRotaryPosEmbed::Tables t = rope_.forward(frames, height, width);
    rope_tables_ = {t.cos.to(device_), t.sin.to(device_)};
    rope_grid_ = {frames, height, width};
  }
  return rope_tables_;
}

WanPatchedInput WanTransformer3DModel::embed_patches(const Tensor& hidden_states) const {
  VGEN_CHECK(resident(), "{}: the weights of this host-resident model are not on {} (upload() first)", kClassName,
             device_.str());
  const int64_t C = config_.in_channels;
  VGEN_CHECK(hidden_states.dim() == 5 && hidden_states.size(1) == C,
             "{}: hidden_states {} must be [batch, {} channels, frames, height, width]", kClassName,
             hidden_states.str(), C);
  const auto [pt, ph, pw] = config_.patch_size;
  WanPatchedInput in;
  in.batch_size = hidden_states.size(0);
  in.post_patch_num_frames = hidden_states.size(2) / pt;
  in.post_patch_height = hidden_states.size(3) / ph;
  in.post_patch_width = hidden_states.size(4) / pw;
  const int64_t B = in.batch_size, F = in.post_patch_num_frames, H = in.post_patch_height, W = in.post_patch_width;
  VGEN_CHECK(F > 0 && H > 0 && W > 0, "{}: hidden_states {} is smaller than one patch ({}, {}, {})", kClassName,
             hidden_states.str(), pt, ph, pw);

  const WanRotaryPosEmbed::Tables rope = rotary_tables(F, H, W);
  in.freqs_cos = rope.cos;
  in.freqs_sin = rope.sin;

  // Conv3d with kernel = stride = patch is a linear map of each patch: gather the patches as
  // rows of (channel, dt, dh, dw) in token order (frame, row, column), the weight's layout.
  // Like the convolution, a remainder that does not fill a patch is dropped.
  Tensor x = hidden_states.to(device_).to(dtype_);
  x = x.narrow(2, 0, F * pt).narrow(3, 0, H * ph).narrow(4, 0, W * pw);
  x = x.reshape({B, C, F, pt, H, ph, W, pw})
          .permute({0, 2, 4, 6, 1, 3, 5, 7})
          .reshape({B, F * H * W, C * pt * ph * pw});
  in.hidden_states = patch_embedding_.forward(x);
  return in;
}

WanConditioning WanTransformer3DModel::condition(const Tensor& timestep, const Tensor& encoder_hidden_states,
                                                 const Tensor& encoder_hidden_states_image) const {
  const int64_t dim = config_.inner_dim();
  VGEN_CHECK(timestep.dim() == 1 || timestep.dim() == 2, "{}: timestep {} must be [batch] or [batch, tokens]",
             kClassName, timestep.str());
  VGEN_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(2) == config_.text_dim,
             "{}: encoder_hidden_states {} must be [batch, tokens, text_dim {}]", kClassName,
             encoder_hidden_states.str(), config_.text_dim);

  // Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0) on the flattened timesteps.
  const Tensor sinusoid =
      get_timestep_embedding(timestep.to_vector(), config_.freq_dim, true, 0.0f).to(device_);
  // TimestepEmbedding (kept in float32), then `.type_as(encoder_hidden_states)`.
  Tensor temb = time_embedder_linear_1_.forward(sinusoid, Activation::Silu);
  temb = time_embedder_linear_2_.forward(temb).to(dtype_);
  Tensor timestep_proj = time_proj_.forward(ops::silu(temb));

  // PixArtAlphaTextProjection: linear, gelu-tanh, linear.
  const Tensor text = encoder_hidden_states.to(device_).to(dtype_);
  Tensor context = text_embedder_linear_1_.forward(text, Activation::GeluTanh);
  context = text_embedder_linear_2_.forward(context);

  WanConditioning c;
  if (timestep.dim() == 2) {
    const int64_t B = timestep.size(0), seq = timestep.size(1);
    c.temb = temb.view({B, seq, dim});
    c.timestep_proj = timestep_proj.view({B, seq, 6, dim});
  } else {
    c.temb = temb;
    c.timestep_proj = timestep_proj.view({timestep.size(0), 6, dim});
  }
  c.encoder_hidden_states = context;

  VGEN_CHECK(encoder_hidden_states_image.defined() == config_.image_dim.has_value(),
             "{}: {}", kClassName,
             config_.image_dim ? "this image-to-video transformer needs encoder_hidden_states_image (CLIP image tokens)"
                               : "this transformer has no image_dim: it takes no encoder_hidden_states_image");
  if (config_.image_dim) {
    // WanImageEmbedding. FLF2V: the first and last image of each video side by side
    // (view(-1, 2 * L, dim)) plus the learned position embedding.
    Tensor image = encoder_hidden_states_image.to(device_).to(dtype_);
    VGEN_CHECK(image.dim() == 3 && image.size(2) == *config_.image_dim,
               "{}: encoder_hidden_states_image {} must be [batch, tokens, image_dim {}]", kClassName, image.str(),
               *config_.image_dim);
    if (config_.pos_embed_seq_len) {
      const int64_t P = *config_.pos_embed_seq_len;
      VGEN_CHECK(2 * image.size(1) == P && image.size(0) % 2 == 0,
                 "{}: encoder_hidden_states_image {} must hold a first and a last image of {} tokens each "
                 "(pos_embed_seq_len {})",
                 kClassName, image.str(), P / 2, P);
      image = ops::add(image.reshape({image.size(0) / 2, P, image.size(2)}), image_pos_embed_);
    }
    image = image_norm1_.forward(image);
    image = image_ff_out_.forward(image_ff_proj_.forward(image, Activation::Gelu));
    c.encoder_hidden_states_image = image_norm2_.forward(image);
    VGEN_CHECK(c.encoder_hidden_states_image.size(0) == context.size(0),
               "{}: {} image contexts for {} text contexts", kClassName, c.encoder_hidden_states_image.size(0),
               context.size(0));
  }
  return c;
}

Tensor WanTransformer3DModel::run_blocks(const WanPatchedInput& input, const WanConditioning& cond) const {
  return run_blocks(input, cond, input.hidden_states, 0, static_cast<int64_t>(blocks_.size()));
}

Tensor WanTransformer3DModel::run_blocks(const WanPatchedInput& input, const WanConditioning& cond, const Tensor& hidden,
                                         int64_t begin, int64_t end) const {
  const int64_t B = input.batch_size, S = input.hidden_states.size(1);
  const Tensor& context = cond.encoder_hidden_states;
  // One modulation row per batch ([B, 1, 6, dim]) or per token ([B, S, 6, dim]).
  const Tensor proj = cond.timestep_proj.dim() == 3 ? cond.timestep_proj.unsqueeze(1) : cond.timestep_proj;
  VGEN_CHECK((proj.size(0) == B || proj.size(0) == 1) && (proj.size(1) == 1 || proj.size(1) == S),
             "{}: timestep_proj {} does not fit {} batches of {} tokens", kClassName, cond.timestep_proj.str(), B, S);
  VGEN_CHECK(context.size(0) == B, "{}: encoder_hidden_states batch {} differs from hidden_states batch {}",
             kClassName, context.size(0), B);
  const int64_t n = static_cast<int64_t>(blocks_.size());
  VGEN_CHECK(0 <= begin && begin <= end && end <= n, "{}: blocks [{}, {}) of {}", kClassName, begin, end, n);
  VGEN_CHECK(hidden.shape() == input.hidden_states.shape(), "{}: hidden {} differs from the stack input {}", kClassName,
             hidden.str(), input.hidden_states.str());
  // Sequence parallelism (the context's ulysses x ring ranks): each rank runs the blocks on
  // its shard of the tokens (with its rows of the RoPE tables and per-token modulation); the
  // self-attentions see the whole sequence, the rest is per token; gathered at the end of the
  // range (a step cache runs the stack in two ranges).
  const ParallelLayout& layout = ExecutionContext::current().parallel();
  const int P = layout.sizes().sequence_size();
  if (P > 1 && begin < end) {
    const int64_t per = (S + P - 1) / P, me = layout.sequence_rank();
    WanPatchedInput local = input;
    local.hidden_states = shard_rows(hidden, 1, me, per);
    local.freqs_cos = shard_rows(input.freqs_cos, 0, me, per);
    local.freqs_sin = shard_rows(input.freqs_sin, 0, me, per);
    local.sequence_parallel = {&layout, S};
    const Tensor local_proj = proj.size(1) == S ? shard_rows(proj, 1, me, per) : proj;
    Tensor h = local.hidden_states;
    for (int64_t i = begin; i < end; ++i)
      h = block_forward(blocks_[static_cast<size_t>(i)], h, context, cond.encoder_hidden_states_image, local_proj, local);
    // [P, B, per, dim] -> [B, P * per, dim] without the padding.
    const Tensor all = layout.sequence().all_gather(h);
    return all.permute({1, 0, 2, 3}).reshape({B, P * per, h.size(2)}).narrow(1, 0, S).contiguous();
  }
  Tensor h = hidden;
  for (int64_t i = begin; i < end; ++i)
    h = block_forward(blocks_[static_cast<size_t>(i)], h, context, cond.encoder_hidden_states_image, proj, input);
  return h;
}

std::vector<std::string> WanTransformer3DModel::module_names(const WanTransformer3DModelConfig& config) {
  std::vector<std::string> names = {"",
                                    "rope",
                                    "patch_embedding",
                                    "condition_embedder",
                                    "condition_embedder.timesteps_proj",
                                    "condition_embedder.time_embedder",
                                    "condition_embedder.time_embedder.linear_1",
                                    "condition_embedder.time_embedder.act",
                                    "condition_embedder.time_embedder.linear_2",
                                    "condition_embedder.act_fn",
                                    "condition_embedder.time_proj",
                                    "condition_embedder.text_embedder",
                                    "condition_embedder.text_embedder.linear_1",
                                    "condition_embedder.text_embedder.act_1",
                                    "condition_embedder.text_embedder.linear_2"};
  if (config.image_dim)
    for (const char* n : {"", ".norm1", ".ff", ".ff.net", ".ff.net.0", ".ff.net.0.proj", ".ff.net.1", ".ff.net.2",
                          ".norm2"})
      names.push_back(std::string("condition_embedder.image_embedder") + n);
  names.push_back("blocks");
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    names.push_back(b);
    names.push_back(b + ".norm1");
    for (const char* attn : {".attn1", ".attn2"}) {
      for (const char* n : {"", ".to_q", ".to_k", ".to_v", ".to_out", ".to_out.0", ".to_out.1", ".norm_q", ".norm_k"})
        names.push_back(b + attn + n);
    }
    if (config.added_kv_proj_dim)
      for (const char* n : {".attn2.add_k_proj", ".attn2.add_v_proj", ".attn2.norm_added_k"}) names.push_back(b + n);
    for (const char* n : {".norm2", ".ffn", ".ffn.net", ".ffn.net.0", ".ffn.net.0.proj", ".ffn.net.1", ".ffn.net.2",
                          ".norm3"})
      names.push_back(b + n);
  }
  names.push_back("norm_out");
  names.push_back("proj_out");
  return names;
}

Tensor WanTransformer3DModel::forward_with_stack(const Tensor& hidden_states, const Tensor& timestep,
                                                 const Tensor& encoder_hidden_states,
                                                 const Tensor& encoder_hidden_states_image,
                                                 const BlockStackFn& stack) const {
  const WanPatchedInput input = embed_patches(hidden_states);
  const WanConditioning cond = condition(timestep, encoder_hidden_states, encoder_hidden_states_image);
  // run_blocks' checks of the conditioning against the tokens (an empty range runs no block).
  run_blocks(input, cond, input.hidden_states, 0, 0);
  const BlockRange range = [&](const Tensor& h, int64_t begin, int64_t end) {
    return run_blocks(input, cond, h, begin, end);
  };
  const Tensor out =
      stack(input.hidden_states, cond.temb, cond.timestep_proj, static_cast<int64_t>(blocks_.size()), range);
  return finish(out, cond, input);
}

Tensor WanTransformer3DModel::block_forward(const Block& block, const Tensor& hidden_states,
                                            const Tensor& encoder_hidden_states,
                                            const Tensor& encoder_hidden_states_image, const Tensor& timestep_proj,
                                            const WanPatchedInput& input) const {
  const int64_t dim = config_.inner_dim();
  // scale_shift_table + temb.float(), chunked into shift, scale, gate (self-attention) and
  // c_shift, c_scale, c_gate (FFN), each [B, 1 or S, dim] float32.
  const Tensor mod = ops::add(block.scale_shift_table.view({1, 1, 6, dim}), f32(timestep_proj));
  auto chunk = [&](int64_t i) { return mod.select(2, i).contiguous(); };
  const Tensor shift_msa = chunk(0), scale_msa = chunk(1), gate_msa = chunk(2);
  const Tensor c_shift_msa = chunk(3), c_scale_msa = chunk(4), c_gate_msa = chunk(5);

  // 1. Self-attention.
  // (LayerNorm(x.float()) * (1 + scale) + shift).type_as(x), and the gated residual
  // (x.float() + y.float() * gate).type_as(x): one fused op each. The RMS qk-norm across heads
  // and the rotation are one fused op per q and k, reading them out of the fused projection.
  // Each residual is fused with the norm that reads it next (ops::residual_layer_norm: the same
  // numbers as the two ops, without reading the residual stream back). Tensors are released
  // as soon as they are read for the last time: the peak is the FFN's with h and its norm.
  const nn::RotaryTables rope{input.freqs_cos, input.freqs_sin};
  Tensor y = block.attn1.forward(block.norm1.forward(hidden_states, scale_msa, shift_msa), &rope, {},
                                 &input.sequence_parallel);

  // 2. Cross-attention: norm2(h.float()).type_as(h) (identity without cross_attn_norm), plain residual.
  // layer_norm computes in float32 and rounds once to h's dtype: the same numbers, no casts.
  ResidualNorm r = block.norm2.forward_residual(hidden_states, y, gate_msa);
  y = Tensor();
  y = block.attn2.forward_cross(r.normed, encoder_hidden_states, encoder_hidden_states_image);

  // 3. Feed-forward.
  r = block.norm3.forward_residual(r.residual, y, {}, c_scale_msa, c_shift_msa);
  y = Tensor();
  const Tensor ff = block.ffn_out.forward(block.ffn_proj.forward(r.normed, Activation::GeluTanh));
  r.normed = Tensor();
  return ops::gated_residual(r.residual, ff, c_gate_msa);
}

Tensor WanTransformer3DModel::finish(const Tensor& hidden_states, const WanConditioning& cond,
                                     const WanPatchedInput& input) const {
  const int64_t dim = config_.inner_dim();
  const auto [pt, ph, pw] = config_.patch_size;
  const int64_t B = input.batch_size, F = input.post_patch_num_frames, H = input.post_patch_height,
                W = input.post_patch_width;
  // scale_shift_table + temb (promoted to float32), chunked into shift and scale [B, 1 or S, dim].
  const Tensor temb = cond.temb.dim() == 2 ? cond.temb.unsqueeze(1) : cond.temb;
  const Tensor mod = ops::add(scale_shift_table_.view({1, 1, 2, dim}), f32(temb).unsqueeze(2));
  const Tensor shift = mod.select(2, 0).contiguous(), scale = mod.select(2, 1).contiguous();

  const Tensor out = proj_out_.forward(norm_out_.forward(hidden_states, scale, shift));  // [B, S, pt*ph*pw*C]
  // Unpatchify: (b, f, h, w, dt, dh, dw, c) -> (b, c, f*pt + dt, h*ph + dh, w*pw + dw).
  return out.view({B, F, H, W, pt, ph, pw, config_.out_channels})
      .permute({0, 7, 1, 4, 2, 5, 3, 6})
      .reshape({B, config_.out_channels, F * pt, H * ph, W * pw});
}

Tensor WanTransformer3DModel::forward(const Tensor& hidden_states, const Tensor& timestep,
                                      const Tensor& encoder_hidden_states,
                                      const Tensor& encoder_hidden_states_image) const {
  const WanPatchedInput input = embed_patches(hidden_states);
  const WanConditioning cond = condition(timestep, encoder_hidden_states, encoder_hidden_states_image);
  // (Collectives of sequence parallelism are not replayed from a graph.)
  if (!graphed_->enabled() || device_.is_cpu() || ExecutionContext::current().parallel().sizes().sequence_size() > 1)
    return finish(run_blocks(input, cond), cond, input);
  std::vector<Tensor> inputs = {input.hidden_states, cond.temb,       cond.timestep_proj, cond.encoder_hidden_states,
                                input.freqs_cos,     input.freqs_sin};
  if (cond.encoder_hidden_states_image.defined()) inputs.push_back(cond.encoder_hidden_states_image);
  return (*graphed_)(inputs,
                     {input.batch_size, input.post_patch_num_frames, input.post_patch_height, input.post_patch_width});
}

}  // namespace vgen
