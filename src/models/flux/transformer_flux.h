// FluxTransformer2DModel (diffusers' transformer_flux.py), the FLUX.1 MMDiT: x_embedder over the
// packed 2x2 latent tokens, context_embedder over the T5 states, a time (+ guidance) + pooled-CLIP
// conditioning vector, num_layers double-stream blocks (separate text and image weights, one joint
// attention with per-head RMS qk-norm and 3-axis RoPE, AdaLayerNormZero), num_single_layers
// single-stream blocks over the concatenated tokens (to_q | to_k | to_v | proj_mlp as one fused
// GEMM, AdaLayerNormZeroSingle), AdaLayerNormContinuous and proj_out. Runs through vgen::ops, so
// one code path serves every backend.
//
// All weights are in the compute dtype (FLUX keeps nothing in float32); the adaLN modulation and
// the gated residuals run in float32 inside the fused ops and round once to the compute dtype
// (diffusers rounds after each multiply and add in bf16: the same numbers in float32).
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "ops/graphed_callable.h"

namespace vgen {

// Fields named as in the transformer's config.json; defaults are diffusers' (register_to_config).
struct FluxTransformer2DModelConfig {
  int64_t patch_size = 1;
  int64_t in_channels = 64;
  int64_t out_channels = 64;  // null in the file means in_channels, as in diffusers
  int64_t num_layers = 19;
  int64_t num_single_layers = 38;
  int64_t attention_head_dim = 128;
  int64_t num_attention_heads = 24;
  int64_t joint_attention_dim = 4096;
  int64_t pooled_projection_dim = 768;
  bool guidance_embeds = false;
  std::vector<int64_t> axes_dims_rope{16, 56, 56};

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  int64_t mlp_hidden_dim() const { return inner_dim() * 4; }  // mlp_ratio 4.0

  // Reads and checks a config.json (`path` names it in errors); fails on values this port does
  // not implement, naming the field.
  static FluxTransformer2DModelConfig from_json(const Json& j, const std::string& path);
};

// FluxPosEmbed(theta 10000, axes_dim): per token, each axis' id rotated by its own frequencies
// (get_1d_rotary_pos_embed, float64, repeat_interleave_real), the axes concatenated:
// ids [S, n_axes] (float32 or int64, host or device) -> cos/sin [S, sum(axes_dim)] float32 on `device`.
nn::RotaryTables flux_pos_embed(const Tensor& ids, const std::vector<int64_t>& axes_dim, Device device,
                                double theta = 10000.0);

// The intermediate values of one forward, for the parity tests (all on the model's device).
struct FluxTransformerTrace {
  Tensor x, context, temb;           // after x_embedder, context_embedder, time_text_embed
  Tensor rope_cos, rope_sin;         // [L + S, head_dim]
  Tensor double_out_hidden, double_out_context;  // after the last double-stream block
  Tensor single_out;                 // image tokens after the last single-stream block
};

class FluxTransformer2DModel {
 public:
  // Reads dir/config.json and the weights in dir (one file or shards), each checked against the
  // shape the config implies and converted to `dtype` on `device`. A missing tensor, or a
  // checkpoint tensor the model does not use, is an error naming it and the folder.
  static std::unique_ptr<FluxTransformer2DModel> from_pretrained(const std::string& dir, DType dtype, Device device);

  ~FluxTransformer2DModel();
  const FluxTransformer2DModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // hidden_states [B, S, in_channels] (packed latents); encoder_hidden_states [B, L,
  // joint_attention_dim]; pooled_projections [B, pooled_projection_dim]; timestep [B] (sigmas in
  // [0, 1]: the model multiplies by 1000, as diffusers' does); img_ids [S, 3], txt_ids [L, 3];
  // guidance [B] (the distilled guidance scale) exactly when the config has guidance_embeds.
  // -> [B, S, out_channels] in the compute dtype.
  Tensor forward(const Tensor& hidden_states, const Tensor& encoder_hidden_states, const Tensor& pooled_projections,
                 const Tensor& timestep, const Tensor& img_ids, const Tensor& txt_ids, const Tensor& guidance = {},
                 FluxTransformerTrace* trace = nullptr) const;

  // Replays the blocks (everything after the embeddings) from a CUDA graph per input shape,
  // as WanTransformer3DModel does; off until enabled, and never on the CPU or with a trace.
  void enable_cuda_graphs(bool enable);
  const GraphedCallable& graphed_step() const { return *graphed_; }

 private:
  // AdaLayerNormZero's projection + FeedForward(gelu-tanh) + the stream's attention weights:
  // one stream (image or text) of a FluxTransformerBlock.
  struct Stream {
    nn::Linear norm1_linear;  // norm1.linear / norm1_context.linear: dim -> 6 dim
    nn::Linear qkv;           // to_q|to_k|to_v or add_q_proj|add_k_proj|add_v_proj
    nn::RMSNorm norm_q, norm_k;  // norm_q/norm_k or norm_added_q/norm_added_k: over head_dim
    nn::Linear out;           // to_out.0 or to_add_out
    nn::Linear ff_proj, ff_out;  // ff(.._context).net.0.proj, net.2
  };
  struct DoubleBlock {
    Stream image, text;
  };
  struct SingleBlock {
    nn::Linear norm_linear;  // norm.linear: dim -> 3 dim
    nn::Linear qkv;          // attn.to_q | attn.to_k | attn.to_v
    nn::Linear proj_mlp;     // dim -> mlp_hidden_dim, GELU (tanh) fused into the GEMM
    nn::RMSNorm norm_q, norm_k;
    nn::Linear proj_out;     // [dim + mlp_hidden_dim] -> dim
  };

  FluxTransformer2DModel(FluxTransformer2DModelConfig config, DType dtype, Device device);

  // time_text_embed: CombinedTimestep(Guidance)TextProjEmbeddings -> [B, dim].
  Tensor time_text_embed(const Tensor& timestep, const Tensor& guidance, const Tensor& pooled) const;
  // The double- and single-stream blocks and the output norm + projection, from the embedded
  // image tokens, text tokens, silu(temb) and the rotary tables: the graphed part of forward.
  Tensor blocks(Tensor hidden, Tensor context, const Tensor& silu_temb, const nn::RotaryTables& rope,
                FluxTransformerTrace* trace) const;
  void double_block(const DoubleBlock& b, Tensor& hidden, Tensor& context, const Tensor& silu_temb,
                    const nn::RotaryTables& rope) const;
  Tensor single_block(const SingleBlock& b, const Tensor& x, const Tensor& silu_temb,
                      const nn::RotaryTables& rope) const;
  // q/k/v [B, T, heads, D] from a fused QKV projection, with the per-head RMS norms and the
  // rotary embedding (rows `first`.. of the tables) applied to q and k in one op each.
  void split_qkv(const Tensor& proj, const nn::RMSNorm& norm_q, const nn::RMSNorm& norm_k,
                 const nn::RotaryTables& rope, int64_t first, Tensor& q, Tensor& k, Tensor& v) const;
  // The rotary tables of [txt_ids | img_ids]: computed on the host in float64 (5-6 ms at
  // 1024x1024, time the GPU would wait for at the start of every forward), so the last ones
  // are kept and reused while the ids stay the same, as they do over a pipeline's steps.
  nn::RotaryTables rope_for(const Tensor& txt_ids, const Tensor& img_ids) const;

  FluxTransformer2DModelConfig config_;
  DType dtype_;
  Device device_;

  nn::Linear x_embedder_, context_embedder_;
  nn::Linear timestep_embedder_1_, timestep_embedder_2_;
  nn::Linear guidance_embedder_1_, guidance_embedder_2_;  // guidance_embeds only
  nn::Linear text_embedder_1_, text_embedder_2_;
  std::vector<DoubleBlock> double_blocks_;
  std::vector<SingleBlock> single_blocks_;
  nn::Linear norm_out_linear_;  // dim -> 2 dim (scale, shift)
  nn::Linear proj_out_;

  std::unique_ptr<GraphedCallable> graphed_;

  mutable std::mutex rope_mutex_;
  mutable std::vector<float> rope_ids_;  // the ids rope_tables_ were made from
  mutable nn::RotaryTables rope_tables_;
};

}  // namespace vgen
