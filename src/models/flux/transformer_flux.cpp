#include "models/flux/transformer_flux.h"

#include <cmath>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "io/config_reader.h"
#include "io/safetensors.h"
#include "models/wan/transformer_wan_embeddings.h"  // get_timestep_embedding (diffusers' embeddings.py)
#include "nn/weights.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "FluxTransformer2DModel";
constexpr float kNormEps = 1e-6f;  // every LayerNorm and qk RMSNorm of the model

// Column i of a [B, n * dim] modulation, as [B, 1, dim] float32 (contiguous, as the fused ops want).
Tensor chunk(const Tensor& emb, int64_t i, int64_t dim) {
  return emb.narrow(1, i * dim, dim).to(DType::F32).contiguous().unsqueeze(1);
}

// x rounded to `dtype` and back to float32, on the host: torch's `.to(dtype)` of a timestep.
std::vector<float> round_to(const std::vector<float>& x, DType dtype) {
  if (dtype == DType::F32) return x;
  return Tensor::from_vector(x, {static_cast<int64_t>(x.size())}).to(dtype).to(DType::F32).to_vector();
}

}  // namespace

FluxTransformer2DModelConfig FluxTransformer2DModelConfig::from_json(const Json& j, const std::string& path) {
  const ConfigReader r(j, path);
  const std::string class_name = r.string("_class_name", kClassName);
  if (class_name != kClassName) fail("{}: _class_name is '{}', expected '{}'", path, class_name, kClassName);
  FluxTransformer2DModelConfig c;
  c.patch_size = r.integer("patch_size", c.patch_size, 1);
  // diffusers' FluxTransformer2DModel has a patch_size field but packs 2x2 in the pipeline and
  // embeds tokens with a plain Linear; every FLUX.1 checkpoint has 1.
  if (c.patch_size != 1) r.fail_value("patch_size", fmt::format("is {}; only 1 is supported", c.patch_size));
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  const int64_t out_channels = r.optional_integer("out_channels", 0).value_or(0);
  c.out_channels = out_channels == 0 ? c.in_channels : out_channels;
  c.num_layers = r.integer("num_layers", c.num_layers, 0);
  c.num_single_layers = r.integer("num_single_layers", c.num_single_layers, 0);
  c.attention_head_dim = r.integer("attention_head_dim", c.attention_head_dim, 1);
  c.num_attention_heads = r.integer("num_attention_heads", c.num_attention_heads, 1);
  c.joint_attention_dim = r.integer("joint_attention_dim", c.joint_attention_dim, 1);
  c.pooled_projection_dim = r.integer("pooled_projection_dim", c.pooled_projection_dim, 1);
  c.guidance_embeds = r.boolean("guidance_embeds", c.guidance_embeds);
  c.axes_dims_rope = r.integer_list("axes_dims_rope", c.axes_dims_rope);
  if (c.axes_dims_rope.empty())
    r.fail_value("axes_dims_rope", "must list at least one axis");
  for (const int64_t d : c.axes_dims_rope)
    if (d <= 0 || d % 2 != 0)
      r.fail_value("axes_dims_rope", fmt::format("must be positive even numbers, got {}", d));
  const int64_t rope_dim = std::accumulate(c.axes_dims_rope.begin(), c.axes_dims_rope.end(), int64_t{0});
  if (rope_dim != c.attention_head_dim)
    r.fail_value("axes_dims_rope", fmt::format("must sum to attention_head_dim {}, sums to {}", c.attention_head_dim,
                                               rope_dim));
  return c;
}

nn::RotaryTables flux_pos_embed(const Tensor& ids, const std::vector<int64_t>& axes_dim, Device device,
                                double theta) {
  const int64_t n_axes = static_cast<int64_t>(axes_dim.size());
  VGEN_CHECK(ids.dim() == 2 && ids.size(1) == n_axes, "FluxPosEmbed: ids {} must be [tokens, {}]", ids.str(), n_axes);
  const int64_t S = ids.size(0);
  const int64_t D = std::accumulate(axes_dim.begin(), axes_dim.end(), int64_t{0});
  // `pos = ids.float()`: the positions as float32, then promoted to float64 by torch.outer.
  const std::vector<float> pos = ids.to(Device::cpu()).to(DType::F32).to_vector();
  Tensor cos = Tensor::empty({S, D}), sin = Tensor::empty({S, D});
  float* c = cos.data<float>();
  float* s = sin.data<float>();
  int64_t offset = 0;
  for (int64_t a = 0; a < n_axes; ++a) {
    const int64_t dim = axes_dim[static_cast<size_t>(a)];
    for (int64_t i = 0; i < dim / 2; ++i) {
      // 1 / theta ** (arange(0, dim, 2) / dim), float64.
      const double freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
      for (int64_t t = 0; t < S; ++t) {
        const double angle = static_cast<double>(pos[static_cast<size_t>(t * n_axes + a)]) * freq;
        const int64_t at = t * D + offset + 2 * i;
        c[at] = c[at + 1] = static_cast<float>(std::cos(angle));  // repeat_interleave(2)
        s[at] = s[at + 1] = static_cast<float>(std::sin(angle));
      }
    }
    offset += dim;
  }
  return {cos.to(device), sin.to(device)};
}

FluxTransformer2DModel::FluxTransformer2DModel(FluxTransformer2DModelConfig config, DType dtype, Device device)
    : config_(std::move(config)), dtype_(dtype), device_(device) {
  // Inputs {hidden (after x_embedder), context (after context_embedder), silu(temb), RoPE cos, sin}.
  graphed_ = std::make_unique<GraphedCallable>(
      kClassName, [this](const std::vector<Tensor>& in, const std::vector<int64_t>&) {
        return blocks(in[0], in[1], in[2], nn::RotaryTables{in[3], in[4]}, nullptr);
      });
  graphed_->set_enabled(false);
}

FluxTransformer2DModel::~FluxTransformer2DModel() = default;

void FluxTransformer2DModel::enable_cuda_graphs(bool enable) { graphed_->set_enabled(enable); }

std::unique_ptr<FluxTransformer2DModel> FluxTransformer2DModel::from_pretrained(const std::string& dir, DType dtype,
                                                                                Device device) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: compute dtype {} is not supported (F32, BF16 or F16)", dir, dtype_name(dtype));
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto model = std::unique_ptr<FluxTransformer2DModel>(new FluxTransformer2DModel(
      FluxTransformer2DModelConfig::from_json(read_json_file(config_path), config_path), dtype, device));
  const FluxTransformer2DModelConfig& c = model->config_;
  const int64_t dim = c.inner_dim(), mlp = c.mlp_hidden_dim(), D = c.attention_head_dim;

  const WeightStore store = WeightStore::open_dir(dir);
  const nn::Weights w(store, dtype, device);

  model->x_embedder_ = nn::Linear(w, "x_embedder", c.in_channels, dim);
  model->context_embedder_ = nn::Linear(w, "context_embedder", c.joint_attention_dim, dim);
  const std::string t = "time_text_embed.";
  model->timestep_embedder_1_ = nn::Linear(w, t + "timestep_embedder.linear_1", 256, dim);
  model->timestep_embedder_2_ = nn::Linear(w, t + "timestep_embedder.linear_2", dim, dim);
  if (c.guidance_embeds) {
    model->guidance_embedder_1_ = nn::Linear(w, t + "guidance_embedder.linear_1", 256, dim);
    model->guidance_embedder_2_ = nn::Linear(w, t + "guidance_embedder.linear_2", dim, dim);
  }
  model->text_embedder_1_ = nn::Linear(w, t + "text_embedder.linear_1", c.pooled_projection_dim, dim);
  model->text_embedder_2_ = nn::Linear(w, t + "text_embedder.linear_2", dim, dim);

  model->double_blocks_.reserve(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("transformer_blocks.{}.", i);
    DoubleBlock b;
    b.image.norm1_linear = nn::Linear(w, p + "norm1.linear", dim, 6 * dim);
    b.image.qkv = nn::Linear::fused(w, {p + "attn.to_q", p + "attn.to_k", p + "attn.to_v"}, dim, dim);
    b.image.norm_q = nn::RMSNorm(w, p + "attn.norm_q", D, kNormEps);
    b.image.norm_k = nn::RMSNorm(w, p + "attn.norm_k", D, kNormEps);
    b.image.out = nn::Linear(w, p + "attn.to_out.0", dim, dim);
    b.image.ff_proj = nn::Linear(w, p + "ff.net.0.proj", dim, mlp);
    b.image.ff_out = nn::Linear(w, p + "ff.net.2", mlp, dim);
    b.text.norm1_linear = nn::Linear(w, p + "norm1_context.linear", dim, 6 * dim);
    b.text.qkv = nn::Linear::fused(w, {p + "attn.add_q_proj", p + "attn.add_k_proj", p + "attn.add_v_proj"}, dim, dim);
    b.text.norm_q = nn::RMSNorm(w, p + "attn.norm_added_q", D, kNormEps);
    b.text.norm_k = nn::RMSNorm(w, p + "attn.norm_added_k", D, kNormEps);
    b.text.out = nn::Linear(w, p + "attn.to_add_out", dim, dim);
    b.text.ff_proj = nn::Linear(w, p + "ff_context.net.0.proj", dim, mlp);
    b.text.ff_out = nn::Linear(w, p + "ff_context.net.2", mlp, dim);
    model->double_blocks_.push_back(std::move(b));
  }
  model->single_blocks_.reserve(static_cast<size_t>(c.num_single_layers));
  for (int64_t i = 0; i < c.num_single_layers; ++i) {
    const std::string p = fmt::format("single_transformer_blocks.{}.", i);
    SingleBlock b;
    b.norm_linear = nn::Linear(w, p + "norm.linear", dim, 3 * dim);
    // Two GEMMs rather than one over [q | k | v | mlp]: the MLP half then takes its GELU in the
    // GEMM's epilogue and lands where proj_out reads it, instead of a copy out of the fused
    // output plus a GELU pass (~450 MB of traffic a block at 1024x1024).
    b.qkv = nn::Linear::fused(w, {p + "attn.to_q", p + "attn.to_k", p + "attn.to_v"}, dim, dim);
    b.proj_mlp = nn::Linear(w, p + "proj_mlp", dim, mlp);
    b.norm_q = nn::RMSNorm(w, p + "attn.norm_q", D, kNormEps);
    b.norm_k = nn::RMSNorm(w, p + "attn.norm_k", D, kNormEps);
    b.proj_out = nn::Linear(w, p + "proj_out", dim + mlp, dim);
    model->single_blocks_.push_back(std::move(b));
  }
  model->norm_out_linear_ = nn::Linear(w, "norm_out.linear", dim, 2 * dim);
  model->proj_out_ = nn::Linear(w, "proj_out", dim, c.patch_size * c.patch_size * c.out_channels);
  w.check_all_used(kClassName, config_path);
  return model;
}

Tensor FluxTransformer2DModel::time_text_embed(const Tensor& timestep, const Tensor& guidance,
                                               const Tensor& pooled) const {
  // `timestep.to(hidden_states.dtype) * 1000` (the product rounded to that dtype too), then
  // Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) in float32, cast to the
  // pooled projection's dtype, and TimestepEmbedding (linear, silu, linear).
  auto embed = [&](const Tensor& t, const nn::Linear& l1, const nn::Linear& l2) {
    std::vector<float> v = round_to(t.to_vector(), dtype_);
    for (float& x : v) x *= 1000.0f;
    const Tensor proj = get_timestep_embedding(round_to(v, dtype_), 256, true, 0.0f).to(device_).to(dtype_);
    return l2.forward(l1.forward(proj, Activation::Silu));
  };
  Tensor temb = embed(timestep, timestep_embedder_1_, timestep_embedder_2_);
  if (config_.guidance_embeds) temb = ops::add(temb, embed(guidance, guidance_embedder_1_, guidance_embedder_2_));
  // PixArtAlphaTextProjection(act_fn="silu"): linear, silu, linear.
  const Tensor text = text_embedder_2_.forward(text_embedder_1_.forward(pooled, Activation::Silu));
  return ops::add(temb, text);
}

void FluxTransformer2DModel::split_qkv(const Tensor& proj, const nn::RMSNorm& norm_q, const nn::RMSNorm& norm_k,
                                       const nn::RotaryTables& rope, int64_t first, Tensor& q, Tensor& k,
                                       Tensor& v) const {
  const int64_t B = proj.size(0), T = proj.size(1), H = config_.num_attention_heads, D = config_.attention_head_dim;
  auto part = [&](int64_t i) { return proj.view({B, T, 3, H, D}).select(2, i); };
  // FluxAttention's norm_q / norm_k (RMSNorm(head_dim) of each head), then the rotary embedding
  // of these tokens' positions, read in place from the fused projection.
  const Tensor cos = rope.cos.narrow(0, first, T), sin = rope.sin.narrow(0, first, T);
  q = norm_q.forward_rope(part(0), cos, sin);
  k = norm_k.forward_rope(part(1), cos, sin);
  v = part(2);
}

void FluxTransformer2DModel::double_block(const DoubleBlock& b, Tensor& hidden, Tensor& context,
                                          const Tensor& silu_temb, const nn::RotaryTables& rope) const {
  const int64_t dim = config_.inner_dim();
  const int64_t S = hidden.size(1), L = context.size(1);
  // AdaLayerNormZero: linear(silu(temb)) -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
  const Tensor emb = b.image.norm1_linear.forward(silu_temb);
  const Tensor c_emb = b.text.norm1_linear.forward(silu_temb);
  // Joint attention: [text | image] tokens, RoPE over both, split back after. Each
  // intermediate is dropped as soon as it is used: the block's peak memory is the model's.
  Tensor context_attn, hidden_attn;
  {
    Tensor Q, K, V;
    {
      Tensor q, k, v, cq, ck, cv;
      split_qkv(b.image.qkv.forward(ops::modulated_layer_norm(hidden, chunk(emb, 1, dim), chunk(emb, 0, dim), kNormEps)),
                b.image.norm_q, b.image.norm_k, rope, L, q, k, v);
      split_qkv(
          b.text.qkv.forward(ops::modulated_layer_norm(context, chunk(c_emb, 1, dim), chunk(c_emb, 0, dim), kNormEps)),
          b.text.norm_q, b.text.norm_k, rope, 0, cq, ck, cv);
      Q = ops::cat({cq, q}, 1);
      K = ops::cat({ck, k}, 1);
      V = ops::cat({cv, v}, 1);
    }
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.attention_head_dim)));
    Tensor attn = nn::scaled_dot_product_attention(Q, K, V, {}, scale);  // [B, L + S, dim]
    Q = K = V = Tensor();
    context_attn = b.text.out.forward(attn.narrow(1, 0, L).contiguous());
    hidden_attn = b.image.out.forward(attn.narrow(1, L, S).contiguous());
  }

  auto finish_stream = [&](const Stream& s, Tensor& x, const Tensor& e, Tensor& attn_out) {
    const Tensor h = ops::gated_residual(x, attn_out, chunk(e, 2, dim));
    x = attn_out = Tensor();
    const Tensor ff =
        s.ff_out.forward(s.ff_proj.forward(ops::modulated_layer_norm(h, chunk(e, 4, dim), chunk(e, 3, dim), kNormEps),
                                           Activation::GeluTanh));
    x = ops::gated_residual(h, ff, chunk(e, 5, dim));
  };
  finish_stream(b.image, hidden, emb, hidden_attn);
  finish_stream(b.text, context, c_emb, context_attn);
}

Tensor FluxTransformer2DModel::single_block(const SingleBlock& b, const Tensor& x, const Tensor& silu_temb,
                                            const nn::RotaryTables& rope) const {
  const int64_t dim = config_.inner_dim();
  // AdaLayerNormZeroSingle: shift, scale, gate.
  const Tensor emb = b.norm_linear.forward(silu_temb);
  Tensor norm = ops::modulated_layer_norm(x, chunk(emb, 1, dim), chunk(emb, 0, dim), kNormEps);
  Tensor q, k, v;
  split_qkv(b.qkv.forward(norm), b.norm_q, b.norm_k, rope, 0, q, k, v);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.attention_head_dim)));
  Tensor attn = nn::scaled_dot_product_attention(q, k, v, {}, scale);
  q = k = v = Tensor();  // the QKV projection's memory is free before the MLP's is taken
  Tensor mlp_out = b.proj_mlp.forward(norm, Activation::GeluTanh);
  norm = Tensor();
  Tensor both = ops::cat({attn, mlp_out}, 2);
  attn = mlp_out = Tensor();
  const Tensor out = b.proj_out.forward(both);
  return ops::gated_residual(x, out, chunk(emb, 2, dim));
}

nn::RotaryTables FluxTransformer2DModel::rope_for(const Tensor& txt_ids, const Tensor& img_ids) const {
  const Tensor ids = ops::cat({txt_ids.to(Device::cpu()).to(DType::F32), img_ids.to(Device::cpu()).to(DType::F32)}, 0);
  std::vector<float> values = ids.to_vector();
  const std::lock_guard<std::mutex> lock(rope_mutex_);
  if (!rope_tables_.cos.defined() || values != rope_ids_) {
    rope_tables_ = flux_pos_embed(ids, config_.axes_dims_rope, device_);
    rope_ids_ = std::move(values);
  }
  return rope_tables_;
}

Tensor FluxTransformer2DModel::forward(const Tensor& hidden_states, const Tensor& encoder_hidden_states,
                                       const Tensor& pooled_projections, const Tensor& timestep,
                                       const Tensor& img_ids, const Tensor& txt_ids, const Tensor& guidance,
                                       FluxTransformerTrace* trace) const {
  const FluxTransformer2DModelConfig& c = config_;
  VGEN_CHECK(hidden_states.dim() == 3 && hidden_states.size(2) == c.in_channels,
             "{}: hidden_states {} must be [batch, tokens, in_channels {}]", kClassName, hidden_states.str(),
             c.in_channels);
  const int64_t B = hidden_states.size(0), S = hidden_states.size(1);
  VGEN_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(0) == B &&
                 encoder_hidden_states.size(2) == c.joint_attention_dim,
             "{}: encoder_hidden_states {} must be [{}, tokens, joint_attention_dim {}]", kClassName,
             encoder_hidden_states.str(), B, c.joint_attention_dim);
  const int64_t L = encoder_hidden_states.size(1);
  VGEN_CHECK(pooled_projections.dim() == 2 && pooled_projections.size(0) == B &&
                 pooled_projections.size(1) == c.pooled_projection_dim,
             "{}: pooled_projections {} must be [{}, pooled_projection_dim {}]", kClassName, pooled_projections.str(),
             B, c.pooled_projection_dim);
  VGEN_CHECK(timestep.dim() == 1 && timestep.size(0) == B, "{}: timestep {} must be [{}]", kClassName,
             timestep.str(), B);
  VGEN_CHECK(c.guidance_embeds == guidance.defined(),
             "{}: {}", kClassName,
             c.guidance_embeds ? "this model has guidance_embeds: a guidance [batch] is required"
                               : "this model has no guidance_embeds: guidance must not be given");
  VGEN_CHECK(!guidance.defined() || (guidance.dim() == 1 && guidance.size(0) == B), "{}: guidance {} must be [{}]",
             kClassName, guidance.str(), B);
  const int64_t n_axes = static_cast<int64_t>(c.axes_dims_rope.size());
  VGEN_CHECK(img_ids.dim() == 2 && img_ids.size(0) == S && img_ids.size(1) == n_axes,
             "{}: img_ids {} must be [{} image tokens, {}]", kClassName, img_ids.str(), S, n_axes);
  VGEN_CHECK(txt_ids.dim() == 2 && txt_ids.size(0) == L && txt_ids.size(1) == n_axes,
             "{}: txt_ids {} must be [{} text tokens, {}]", kClassName, txt_ids.str(), L, n_axes);

  Tensor hidden = x_embedder_.forward(hidden_states.to(device_).to(dtype_));
  const Tensor temb = time_text_embed(timestep, guidance, pooled_projections.to(device_).to(dtype_));
  Tensor context = context_embedder_.forward(encoder_hidden_states.to(device_).to(dtype_));
  const nn::RotaryTables rope = rope_for(txt_ids, img_ids);
  const Tensor silu_temb = ops::silu(temb);
  if (trace) {
    trace->x = hidden;
    trace->context = context;
    trace->temb = temb;
    trace->rope_cos = rope.cos;
    trace->rope_sin = rope.sin;
  }
  // hidden and context are handed over, not kept: the first block frees them.
  if (trace || !graphed_->enabled() || device_.is_cpu())
    return blocks(std::move(hidden), std::move(context), silu_temb, rope, trace);
  return (*graphed_)({std::move(hidden), std::move(context), silu_temb, rope.cos, rope.sin});
}

Tensor FluxTransformer2DModel::blocks(Tensor hidden, Tensor context, const Tensor& silu_temb,
                                      const nn::RotaryTables& rope, FluxTransformerTrace* trace) const {
  const FluxTransformer2DModelConfig& c = config_;
  const int64_t S = hidden.size(1), L = context.size(1);
  for (const DoubleBlock& b : double_blocks_) double_block(b, hidden, context, silu_temb, rope);
  if (trace) {
    trace->double_out_hidden = hidden;
    trace->double_out_context = context;
  }
  // The single-stream blocks run over [text | image]; diffusers splits and re-concatenates the
  // two around each block, which changes nothing.
  Tensor x = ops::cat({context, hidden}, 1);
  context = hidden = Tensor();
  for (const SingleBlock& b : single_blocks_) x = single_block(b, x, silu_temb, rope);
  hidden = x.narrow(1, L, S).contiguous();
  x = Tensor();
  if (trace) trace->single_out = hidden;

  // AdaLayerNormContinuous: linear(silu(temb)) -> scale, shift (in that order).
  const Tensor emb = norm_out_linear_.forward(silu_temb);
  const int64_t dim = c.inner_dim();
  const Tensor norm = ops::modulated_layer_norm(hidden, chunk(emb, 0, dim), chunk(emb, 1, dim), kNormEps);
  return proj_out_.forward(norm);
}

}  // namespace vgen
