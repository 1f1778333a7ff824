#include "models/wan/transformer_wan.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace vgen {
namespace {

constexpr const char* kClassName = "WanTransformer3DModel";

bool is_set(const Json& j, const std::string& key) { return j.contains(key) && !j.at(key).is_null(); }

int64_t positive_field(const Json& j, const std::string& key, int64_t fallback, const std::string& path) {
  const int64_t v = json_get<int64_t>(j, key, fallback, path);
  if (v <= 0) fail("{}: field '{}' must be positive, got {}", path, key, v);
  return v;
}

// Returns x as float32 (itself when it already is): diffusers' `.float()`.
Tensor f32(const Tensor& x) { return x.to(DType::F32); }

}  // namespace

WanTransformer3DModelConfig WanTransformer3DModelConfig::from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  const std::string class_name = json_get<std::string>(j, "_class_name", kClassName, path);
  if (class_name != kClassName) fail("{}: _class_name is '{}', expected '{}'", path, class_name, kClassName);

  for (const char* key : {"image_dim", "added_kv_proj_dim", "pos_embed_seq_len"}) {
    if (is_set(j, key))
      fail("{}: field '{}' is {}: image-to-video transformers (CLIP image context) are not supported yet", path, key,
           j.at(key).dump());
  }

  WanTransformer3DModelConfig c;
  const std::vector<int64_t> patch = json_get<std::vector<int64_t>>(j, "patch_size", {1, 2, 2}, path);
  if (patch.size() != 3 || patch[0] <= 0 || patch[1] <= 0 || patch[2] <= 0)
    fail("{}: field 'patch_size' must be 3 positive integers (t, h, w), got {}", path, j.at("patch_size").dump());
  c.patch_size = {patch[0], patch[1], patch[2]};
  c.num_attention_heads = positive_field(j, "num_attention_heads", c.num_attention_heads, path);
  c.attention_head_dim = positive_field(j, "attention_head_dim", c.attention_head_dim, path);
  if (c.attention_head_dim % 2 != 0)
    fail("{}: field 'attention_head_dim' must be even for the rotary embedding, got {}", path, c.attention_head_dim);
  c.in_channels = positive_field(j, "in_channels", c.in_channels, path);
  // diffusers: `out_channels = out_channels or in_channels`.
  const int64_t out_channels = json_get<int64_t>(j, "out_channels", 0, path);
  if (out_channels < 0) fail("{}: field 'out_channels' must not be negative, got {}", path, out_channels);
  c.out_channels = out_channels == 0 ? c.in_channels : out_channels;
  c.text_dim = positive_field(j, "text_dim", c.text_dim, path);
  c.freq_dim = positive_field(j, "freq_dim", c.freq_dim, path);
  c.ffn_dim = positive_field(j, "ffn_dim", c.ffn_dim, path);
  c.num_layers = json_get<int64_t>(j, "num_layers", c.num_layers, path);
  if (c.num_layers < 0) fail("{}: field 'num_layers' must not be negative, got {}", path, c.num_layers);
  c.cross_attn_norm = json_get<bool>(j, "cross_attn_norm", c.cross_attn_norm, path);
  // diffusers 0.42 builds the across-heads RMSNorm of q and k whatever this says; accept only
  // the value the Wan checkpoints use rather than guess what another one would mean.
  if (j.contains("qk_norm") && j.at("qk_norm").is_null())
    fail("{}: field 'qk_norm' is null; only \"rms_norm_across_heads\" is supported", path);
  c.qk_norm = json_get<std::string>(j, "qk_norm", c.qk_norm, path);
  if (c.qk_norm != "rms_norm_across_heads")
    fail("{}: field 'qk_norm' is \"{}\"; only \"rms_norm_across_heads\" is supported", path, c.qk_norm);
  c.eps = json_get<double>(j, "eps", c.eps, path);
  if (!(c.eps > 0.0 && c.eps < 1.0)) fail("{}: field 'eps' must be in (0, 1), got {}", path, c.eps);
  c.rope_max_seq_len = positive_field(j, "rope_max_seq_len", c.rope_max_seq_len, path);
  return c;
}

WanTransformer3DModel::WanTransformer3DModel(WanTransformer3DModelConfig config, DType dtype, Device device)
    : config_(std::move(config)),
      dtype_(dtype),
      device_(device),
      rope_(config_.attention_head_dim, config_.rope_max_seq_len) {
  // The graphed part of forward: inputs {hidden_states after the patch embedding, temb,
  // timestep_proj, projected text, RoPE cos, RoPE sin}, params {batch, frames, height, width}.
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
        return finish(run_blocks(input, cond), cond, input);
      });
  graphed_->set_enabled(false);
}

void WanTransformer3DModel::enable_cuda_graphs(bool enable) { graphed_->set_enabled(enable); }

std::unique_ptr<WanTransformer3DModel> WanTransformer3DModel::from_pretrained(const std::string& dir, DType dtype,
                                                                              Device device) {
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
  auto load = [&](const std::string& name, const Shape& shape, DType as) {
    return store.load(name, shape, as, device);
  };
  auto linear = [&](const std::string& prefix, int64_t out, int64_t in, DType as) {
    return Linear{load(prefix + ".weight", {out, in}, as), load(prefix + ".bias", {out}, as)};
  };
  // Concatenates projections of the same input along the output features.
  auto fused = [&](const std::string& prefix, std::initializer_list<const char*> parts, int64_t out, int64_t in) {
    std::vector<Tensor> weights, biases;
    for (const char* p : parts) {
      Linear l = linear(prefix + p, out, in, dtype);
      weights.push_back(l.weight);
      biases.push_back(l.bias);
    }
    return Linear{ops::cat(weights, 0), ops::cat(biases, 0)};
  };

  const Tensor patch_weight = load("patch_embedding.weight", {dim, c.in_channels, pt, ph, pw}, dtype);
  model->patch_embedding_ = {patch_weight.view({dim, c.in_channels * pt * ph * pw}),
                             load("patch_embedding.bias", {dim}, dtype)};
  model->time_embedder_linear_1_ = linear("condition_embedder.time_embedder.linear_1", dim, c.freq_dim, DType::F32);
  model->time_embedder_linear_2_ = linear("condition_embedder.time_embedder.linear_2", dim, dim, DType::F32);
  model->time_proj_ = linear("condition_embedder.time_proj", 6 * dim, dim, dtype);
  model->text_embedder_linear_1_ = linear("condition_embedder.text_embedder.linear_1", dim, c.text_dim, dtype);
  model->text_embedder_linear_2_ = linear("condition_embedder.text_embedder.linear_2", dim, dim, dtype);

  model->blocks_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block& b = model->blocks_[static_cast<size_t>(i)];
    b.scale_shift_table = load(p + "scale_shift_table", {1, 6, dim}, DType::F32);
    b.attn1_to_qkv = fused(p + "attn1.", {"to_q", "to_k", "to_v"}, dim, dim);
    b.attn1_to_out = linear(p + "attn1.to_out.0", dim, dim, dtype);
    b.attn1_norm_q = load(p + "attn1.norm_q.weight", {dim}, dtype);
    b.attn1_norm_k = load(p + "attn1.norm_k.weight", {dim}, dtype);
    b.attn2_to_q = linear(p + "attn2.to_q", dim, dim, dtype);
    b.attn2_to_kv = fused(p + "attn2.", {"to_k", "to_v"}, dim, dim);
    b.attn2_to_out = linear(p + "attn2.to_out.0", dim, dim, dtype);
    b.attn2_norm_q = load(p + "attn2.norm_q.weight", {dim}, dtype);
    b.attn2_norm_k = load(p + "attn2.norm_k.weight", {dim}, dtype);
    if (c.cross_attn_norm) {
      b.norm2_weight = load(p + "norm2.weight", {dim}, DType::F32);
      b.norm2_bias = load(p + "norm2.bias", {dim}, DType::F32);
    }
    b.ffn_proj = linear(p + "ffn.net.0.proj", c.ffn_dim, dim, dtype);
    b.ffn_out = linear(p + "ffn.net.2", dim, c.ffn_dim, dtype);
  }
  model->scale_shift_table_ = load("scale_shift_table", {1, 2, dim}, DType::F32);
  model->proj_out_ = linear("proj_out", c.out_channels * pt * ph * pw, dim, dtype);

  // Like diffusers' `_keys_to_ignore_on_load_unexpected`, leftover norm_added_q weights are fine.
  std::vector<std::string> unused;
  for (const std::string& name : store.unused())
    if (name.find("norm_added_q") == std::string::npos) unused.push_back(name);
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 8; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
    if (unused.size() > 8) list += fmt::format(" and {} more", unused.size() - 8);
    fail("{}: {} tensor(s) in the checkpoint are not used by {} as configured by {}: {}", dir, unused.size(),
         kClassName, config_path, list);
  }
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
  in.hidden_states = ops::linear(x, patch_embedding_.weight, patch_embedding_.bias);
  return in;
}

WanConditioning WanTransformer3DModel::condition(const Tensor& timestep, const Tensor& encoder_hidden_states) const {
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
  Tensor temb = ops::linear(sinusoid, time_embedder_linear_1_.weight, time_embedder_linear_1_.bias, Activation::Silu);
  temb = ops::linear(temb, time_embedder_linear_2_.weight, time_embedder_linear_2_.bias).to(dtype_);
  Tensor timestep_proj = ops::linear(ops::silu(temb), time_proj_.weight, time_proj_.bias);

  // PixArtAlphaTextProjection: linear, gelu-tanh, linear.
  const Tensor text = encoder_hidden_states.to(device_).to(dtype_);
  Tensor context =
      ops::linear(text, text_embedder_linear_1_.weight, text_embedder_linear_1_.bias, Activation::GeluTanh);
  context = ops::linear(context, text_embedder_linear_2_.weight, text_embedder_linear_2_.bias);

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
  return c;
}

Tensor WanTransformer3DModel::run_blocks(const WanPatchedInput& input, const WanConditioning& cond) const {
  const int64_t B = input.batch_size, S = input.hidden_states.size(1);
  const Tensor& context = cond.encoder_hidden_states;
  // One modulation row per batch ([B, 1, 6, dim]) or per token ([B, S, 6, dim]).
  const Tensor proj = cond.timestep_proj.dim() == 3 ? cond.timestep_proj.unsqueeze(1) : cond.timestep_proj;
  VGEN_CHECK((proj.size(0) == B || proj.size(0) == 1) && (proj.size(1) == 1 || proj.size(1) == S),
             "{}: timestep_proj {} does not fit {} batches of {} tokens", kClassName, cond.timestep_proj.str(), B, S);
  VGEN_CHECK(context.size(0) == B, "{}: encoder_hidden_states batch {} differs from hidden_states batch {}",
             kClassName, context.size(0), B);
  Tensor h = input.hidden_states;
  for (const Block& block : blocks_) h = block_forward(block, h, context, proj, input);
  return h;
}

Tensor WanTransformer3DModel::block_forward(const Block& block, const Tensor& hidden_states,
                                            const Tensor& encoder_hidden_states, const Tensor& timestep_proj,
                                            const WanPatchedInput& input) const {
  const int64_t dim = config_.inner_dim();
  const float eps = static_cast<float>(config_.eps);
  // scale_shift_table + temb.float(), chunked into shift, scale, gate (self-attention) and
  // c_shift, c_scale, c_gate (FFN), each [B, 1 or S, dim] float32.
  const Tensor mod = ops::add(block.scale_shift_table.view({1, 1, 6, dim}), f32(timestep_proj));
  auto chunk = [&](int64_t i) { return mod.select(2, i).contiguous(); };
  const Tensor shift_msa = chunk(0), scale_msa = chunk(1), gate_msa = chunk(2);
  const Tensor c_shift_msa = chunk(3), c_scale_msa = chunk(4), c_gate_msa = chunk(5);

  // 1. Self-attention.
  // (LayerNorm(x.float()) * (1 + scale) + shift).type_as(x), and the gated residual
  // (x.float() + y.float() * gate).type_as(x): one fused op each.
  Tensor norm = ops::modulated_layer_norm(hidden_states, scale_msa, shift_msa, eps);
  Tensor h = ops::gated_residual(hidden_states, self_attention(block, norm, input), gate_msa);

  // 2. Cross-attention: norm2(h.float()).type_as(h) (identity without cross_attn_norm), plain residual.
  // layer_norm computes in float32 and rounds once to h's dtype: the same numbers, no casts.
  norm = block.norm2_weight.defined() ? ops::layer_norm(h, block.norm2_weight, block.norm2_bias, eps) : h;
  h = ops::add(h, cross_attention(block, norm, encoder_hidden_states));

  // 3. Feed-forward.
  norm = ops::modulated_layer_norm(h, c_scale_msa, c_shift_msa, eps);
  const Tensor ff = ops::linear(ops::linear(norm, block.ffn_proj.weight, block.ffn_proj.bias, Activation::GeluTanh),
                                block.ffn_out.weight, block.ffn_out.bias);
  return ops::gated_residual(h, ff, c_gate_msa);
}

Tensor WanTransformer3DModel::self_attention(const Block& block, const Tensor& x, const WanPatchedInput& input) const {
  const int64_t B = x.size(0), S = x.size(1);
  const int64_t heads = config_.num_attention_heads, D = config_.attention_head_dim;
  const float eps = static_cast<float>(config_.eps);
  const Tensor qkv = ops::linear(x, block.attn1_to_qkv.weight, block.attn1_to_qkv.bias);
  // RMSNorm over all heads together, then split into heads and rotate (one fused op each,
  // reading q and k straight out of the fused projection).
  const Tensor qkv_heads = qkv.view({B, S, 3, heads, D});
  const Tensor q = ops::rms_norm_rope(qkv_heads.select(2, 0), block.attn1_norm_q, eps, input.freqs_cos, input.freqs_sin);
  const Tensor k = ops::rms_norm_rope(qkv_heads.select(2, 1), block.attn1_norm_k, eps, input.freqs_cos, input.freqs_sin);
  const Tensor v = qkv_heads.select(2, 2);
  return attend(q, k, v, block.attn1_to_out);
}

Tensor WanTransformer3DModel::cross_attention(const Block& block, const Tensor& x, const Tensor& context) const {
  const int64_t B = x.size(0), S = x.size(1), L = context.size(1), dim = config_.inner_dim();
  const int64_t heads = config_.num_attention_heads, D = config_.attention_head_dim;
  const float eps = static_cast<float>(config_.eps);
  const Tensor q = ops::rms_norm(ops::linear(x, block.attn2_to_q.weight, block.attn2_to_q.bias), block.attn2_norm_q,
                                 eps).view({B, S, heads, D});
  const Tensor kv = ops::linear(context, block.attn2_to_kv.weight, block.attn2_to_kv.bias);
  const Tensor k = ops::rms_norm(kv.narrow(2, 0, dim), block.attn2_norm_k, eps).view({B, L, heads, D});
  const Tensor v = kv.narrow(2, dim, dim).reshape({B, L, heads, D});
  return attend(q, k, v, block.attn2_to_out);
}

// Scaled dot-product attention (scale 1/sqrt(head_dim)) of [B, S, heads, D] tensors, heads
// merged back, then to_out.
Tensor WanTransformer3DModel::attend(const Tensor& q, const Tensor& k, const Tensor& v, const Linear& to_out) const {
  const int64_t B = q.size(0), S = q.size(1);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.attention_head_dim)));
  const Tensor out = ops::attention(q.permute({0, 2, 1, 3}), k.permute({0, 2, 1, 3}), v.permute({0, 2, 1, 3}), {},
                                    scale);
  return ops::linear(out.permute({0, 2, 1, 3}).reshape({B, S, config_.inner_dim()}), to_out.weight, to_out.bias);
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

  const Tensor norm = ops::modulated_layer_norm(hidden_states, scale, shift, static_cast<float>(config_.eps));
  const Tensor out = ops::linear(norm, proj_out_.weight, proj_out_.bias);  // [B, S, pt*ph*pw*C]
  // Unpatchify: (b, f, h, w, dt, dh, dw, c) -> (b, c, f*pt + dt, h*ph + dh, w*pw + dw).
  return out.view({B, F, H, W, pt, ph, pw, config_.out_channels})
      .permute({0, 7, 1, 4, 2, 5, 3, 6})
      .reshape({B, config_.out_channels, F * pt, H * ph, W * pw});
}

Tensor WanTransformer3DModel::forward(const Tensor& hidden_states, const Tensor& timestep,
                                      const Tensor& encoder_hidden_states) const {
  const WanPatchedInput input = embed_patches(hidden_states);
  const WanConditioning cond = condition(timestep, encoder_hidden_states);
  if (!graphed_->enabled() || device_.is_cpu()) return finish(run_blocks(input, cond), cond, input);
  return (*graphed_)({input.hidden_states, cond.temb, cond.timestep_proj, cond.encoder_hidden_states, input.freqs_cos,
                      input.freqs_sin},
                     {input.batch_size, input.post_patch_num_frames, input.post_patch_height, input.post_patch_width});
}

}  // namespace vgen
