// WanTransformer3DModel (diffusers' transformer_wan.py), the Wan2.1 text-to-video DiT:
// patch embedding, timestep/text conditioning, N blocks of (modulated self-attention with
// 3-D RoPE, cross-attention to the text, modulated gelu-tanh FFN), modulated output norm,
// projection and unpatchify. Runs through vgen::ops, so one code path serves every backend.
//
// Weights live in a compute dtype chosen at load (float32 on the CPU, bf16 on the GPU),
// except those diffusers keeps in float32 (`_keep_in_fp32_modules`: time_embedder,
// scale_shift_table, norm2); norms, modulation and gated residuals run in float32 with
// diffusers' casts.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/json.h"
#include "models/wan/transformer_wan_embeddings.h"
#include "nn/attention.h"
#include "nn/host_offload.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "ops/graphed_callable.h"

namespace vgen {

// Fields named as in the transformer's config.json; defaults are diffusers' (register_to_config).
struct WanTransformer3DModelConfig {
  std::array<int64_t, 3> patch_size{1, 2, 2};
  int64_t num_attention_heads = 40;
  int64_t attention_head_dim = 128;
  int64_t in_channels = 16;
  int64_t out_channels = 16;  // null or 0 in the file means in_channels, as in diffusers
  int64_t text_dim = 4096;
  int64_t freq_dim = 256;
  int64_t ffn_dim = 13824;
  int64_t num_layers = 40;
  bool cross_attn_norm = true;
  std::string qk_norm = "rms_norm_across_heads";
  double eps = 1e-6;
  int64_t rope_max_seq_len = 1024;
  // Wan2.1 image-to-video (CLIP image context): the CLIP width of the image embeddings, the
  // width the cross-attention's image key/value projections read (inner_dim), and for FLF2V
  // a learned position embedding over the first and last image's tokens. Null otherwise
  // (Wan2.2 image-to-video conditions on the VAE latents only).
  std::optional<int64_t> image_dim;
  std::optional<int64_t> added_kv_proj_dim;
  std::optional<int64_t> pos_embed_seq_len;

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }

  // Reads and checks a config.json (`path` names it in errors); fails on values this port
  // does not implement, naming the field.
  static WanTransformer3DModelConfig from_json(const Json& j, const std::string& path);
};

// The latents cut into patches: tokens plus what later stages need about the grid.
struct WanPatchedInput {
  Tensor hidden_states;  // [B, S, inner_dim], compute dtype; S = frames * height * width
  int64_t batch_size = 0;
  int64_t post_patch_num_frames = 0, post_patch_height = 0, post_patch_width = 0;
  Tensor freqs_cos, freqs_sin;  // [S, attention_head_dim] float32 RoPE tables on the model's device
  // Set by run_blocks on a rank's shard of the tokens (sequence parallelism), else inactive.
  nn::SequenceParallel sequence_parallel;
};

// The condition embedder's outputs (WanTimeTextImageEmbedding), shaped as diffusers has them.
struct WanConditioning {
  Tensor temb;           // [B, inner_dim] ([B, seq, inner_dim] for per-token timesteps), compute dtype
  Tensor timestep_proj;  // [B, 6, inner_dim] ([B, seq, 6, inner_dim]), compute dtype
  Tensor encoder_hidden_states;  // [B, L, inner_dim]: the projected text, compute dtype
  // [B, L_img, inner_dim]: the projected CLIP image tokens (image_embedder), undefined without.
  Tensor encoder_hidden_states_image;
};

class WanTransformer3DModel {
 public:
  // Reads dir/config.json and the weights in dir (one file or shards), each checked against
  // the shape the config implies and converted to `dtype` on `device`. A missing tensor, or a
  // checkpoint tensor the model does not use, is an error naming it and the folder.
  // host_resident: the weights load into host memory and visit `device` only between upload()
  // and release() (an idle Wan2.2 expert on a GPU too small for both); forward needs them there.
  // lora: adapters fused into the weights as they load (diffusers' load_lora_weights +
  // fuse_lora(lora_scale)), in order; a LoRA key or module this model lacks is an error unless
  // lora_ignore_unmatched (see nn/lora.h).
  // quant: the linear layers quantized (after the LoRA merge) or read pre-quantized (nn/quant.h);
  // the modules diffusers keeps in float32 stay unquantized.
  static std::unique_ptr<WanTransformer3DModel> from_pretrained(const std::string& dir, DType dtype, Device device,
                                                                bool host_resident = false,
                                                                const std::vector<nn::LoraAdapterSpec>& lora = {},
                                                                bool lora_ignore_unmatched = false,
                                                                const QuantConfig& quant = {});

  const WanTransformer3DModelConfig& config() const { return config_; }
  // diffusers' named_modules() of this config, in its order, the root "" first (TaylorSeer's
  // hooks match their identifiers against these names: pipelines/cache/step_cache.h).
  static std::vector<std::string> module_names(const WanTransformer3DModelConfig& config);
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // hidden_states [B, in_channels, F, H, W]; timestep [B] (or [B, F'*H'*W'] per token, as
  // Wan2.2 TI2V) with values like 999.0; encoder_hidden_states [B, L, text_dim]
  // -> [B, out_channels, F, H, W] in the compute dtype. encoder_hidden_states_image
  // [B', L_img, image_dim] (CLIP hidden states; with pos_embed_seq_len, B' = 2B: first and last
  // image of each video): required exactly when the config has an image_dim.
  Tensor forward(const Tensor& hidden_states, const Tensor& timestep, const Tensor& encoder_hidden_states,
                 const Tensor& encoder_hidden_states_image = {}) const;

  // Whether forward replays run_blocks + finish from a CUDA graph per input shape (on a GPU;
  // the embeddings before them run eagerly, as they read the timestep on the host). Off by
  // default; the pipelines turn it on. The numbers are the same either way.
  void enable_cuda_graphs(bool enable);

  // A host_resident model's weights: to the device (the copies are issued in the calling
  // context's order) and back (the device memory freed). Resident models ignore both.
  void upload();
  void release();
  bool resident() const { return !offload_.defined() || offload_.resident(); }
  const GraphedCallable& graphed_step() const { return *graphed_; }

  // The stages of forward, separately, so a step cache (TeaCache) can look at `temb` and
  // skip run_blocks: forward = finish(run_blocks(embed_patches(x), c), c, x) with
  // c = condition(timestep, encoder_hidden_states).
  WanPatchedInput embed_patches(const Tensor& hidden_states) const;
  WanConditioning condition(const Tensor& timestep, const Tensor& encoder_hidden_states,
                            const Tensor& encoder_hidden_states_image = {}) const;
  Tensor run_blocks(const WanPatchedInput& input, const WanConditioning& cond) const;  // -> [B, S, inner_dim]
  // Blocks [begin, end) on `hidden` [B, S, inner_dim] (a step cache runs block 0 alone, then the rest).
  Tensor run_blocks(const WanPatchedInput& input, const WanConditioning& cond, const Tensor& hidden, int64_t begin,
                    int64_t end) const;

  // forward with the block stack handed to `stack` (a step cache, pipelines/cache/step_cache.h):
  // it gets the stack's input [B, S, inner_dim], the timestep embedding temb and its projection
  // timestep_proj (TeaCache's modulated inputs), the number of blocks and a function running
  // blocks [begin, end), and returns the stack's output. Runs eagerly (no CUDA graph: the stack
  // differs call to call).
  using BlockRange = std::function<Tensor(const Tensor& hidden, int64_t begin, int64_t end)>;
  using BlockStackFn = std::function<Tensor(const Tensor& hidden, const Tensor& temb, const Tensor& timestep_proj,
                                            int64_t num_blocks, const BlockRange& run)>;
  Tensor forward_with_stack(const Tensor& hidden_states, const Tensor& timestep, const Tensor& encoder_hidden_states,
                            const Tensor& encoder_hidden_states_image, const BlockStackFn& stack) const;
  // norm_out with the output modulation, proj_out, unpatchify -> [B, out_channels, F, H, W].
  Tensor finish(const Tensor& hidden_states, const WanConditioning& cond, const WanPatchedInput& input) const;

 private:
  // WanTransformerBlock, its modules named as the checkpoint's keys under blocks.N.
  struct Block {
    Block(const nn::Weights& weights, const std::string& prefix, const WanTransformer3DModelConfig& config);

    Tensor scale_shift_table;  // [1, 6, dim] float32
    nn::ModulatedLayerNorm norm1;
    nn::Attention attn1;  // to_q | to_k | to_v fused into one projection (one GEMM; the same numbers)
    nn::LayerNorm norm2;  // float32; identity without cross_attn_norm
    nn::Attention attn2;  // queries from the video tokens, to_k | to_v fused over the text
    nn::ModulatedLayerNorm norm3;
    nn::Linear ffn_proj, ffn_out;  // ffn.net.0.proj (then gelu-tanh), ffn.net.2
  };

  WanTransformer3DModel(WanTransformer3DModelConfig config, DType dtype, Device device);

  Tensor block_forward(const Block& block, const Tensor& hidden_states, const Tensor& encoder_hidden_states,
                       const Tensor& encoder_hidden_states_image, const Tensor& timestep_proj,
                       const WanPatchedInput& input) const;
  WanRotaryPosEmbed::Tables rotary_tables(int64_t frames, int64_t height, int64_t width) const;

  WanTransformer3DModelConfig config_;
  DType dtype_;
  Device device_;
  WanRotaryPosEmbed rope_;

  nn::Linear patch_embedding_;  // Conv3d weight viewed as [dim, in_channels * pt * ph * pw]
  nn::Linear time_embedder_linear_1_, time_embedder_linear_2_;  // float32
  nn::Linear time_proj_;
  nn::Linear text_embedder_linear_1_, text_embedder_linear_2_;
  // WanImageEmbedding (image-to-video): FP32LayerNorm, gelu FeedForward (mult 1), FP32LayerNorm.
  Tensor image_pos_embed_;  // [1, pos_embed_seq_len, image_dim], FLF2V only
  nn::LayerNorm image_norm1_, image_norm2_;
  nn::Linear image_ff_proj_, image_ff_out_;
  std::vector<Block> blocks_;
  Tensor scale_shift_table_;  // [1, 2, dim] float32
  nn::ModulatedLayerNorm norm_out_;
  nn::Linear proj_out_;

  std::unique_ptr<GraphedCallable> graphed_;
  nn::HostOffload offload_;  // defined for a host_resident model

  // The RoPE tables of the last grid (every step of a generation uses the same one).
  mutable std::mutex rope_mutex_;
  mutable std::array<int64_t, 3> rope_grid_{0, 0, 0};
  mutable WanRotaryPosEmbed::Tables rope_tables_;
};

}  // namespace vgen
