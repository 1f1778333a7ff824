// The position and timestep embeddings of WanTransformer3DModel, computed on the host with
// diffusers' arithmetic (diffusers/models/embeddings.py, transformer_wan.py).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace vgen {

// diffusers' get_timestep_embedding: sinusoidal embedding [N, embedding_dim] (CPU float32) of
// N timesteps, with torch's float32 steps (exponent, exp, product, sin/cos) in torch's order.
Tensor get_timestep_embedding(const std::vector<float>& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                              float downscale_freq_shift, float scale = 1.0f, int64_t max_period = 10000);

// WanRotaryPosEmbed: attention_head_dim splits into a frame part t_dim = d - 2 * h_dim and
// row/column parts h_dim = w_dim = 2 * (d / 6), each with its own 1-D rotary frequencies
// (theta^(-2i/part_dim), computed in float64 as diffusers does, then rounded to float32).
class WanRotaryPosEmbed {
 public:
  struct Tables {
    Tensor cos;  // [frames * height * width, attention_head_dim], CPU float32
    Tensor sin;
  };

  WanRotaryPosEmbed(int64_t attention_head_dim, int64_t max_seq_len, double theta = 10000.0);

  int64_t t_dim() const { return t_dim_; }
  int64_t h_dim() const { return h_dim_; }
  int64_t w_dim() const { return w_dim_; }
  int64_t max_seq_len() const { return max_seq_len_; }

  // Tables for a post-patch grid, tokens in (frame, row, column) order; each pair of
  // channels repeats one angle (interleaved layout, as ops::rope expects).
  Tables forward(int64_t frames, int64_t height, int64_t width) const;

 private:
  int64_t head_dim_, t_dim_, h_dim_, w_dim_, max_seq_len_;
  // [max_seq_len, head_dim]: the t, h and w tables side by side, as diffusers' buffers.
  std::vector<float> freqs_cos_, freqs_sin_;
};

}  // namespace vgen
