#include "models/wan/transformer_wan_embeddings.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vgen {

Tensor get_timestep_embedding(const std::vector<float>& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                              float downscale_freq_shift, float scale, int64_t max_period) {
  VGEN_CHECK(embedding_dim > 0, "get_timestep_embedding: embedding_dim {} must be positive", embedding_dim);
  const int64_t n = static_cast<int64_t>(timesteps.size());
  const int64_t half = embedding_dim / 2;
  // torch: (-log(max_period) * arange(half, float32)) / (half - shift), then exp, all in float32.
  const float neg_log = static_cast<float>(-std::log(static_cast<double>(max_period)));
  const float denom = static_cast<float>(half) - downscale_freq_shift;
  std::vector<float> freqs(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = (neg_log * static_cast<float>(i)) / denom;
    freqs[i] = static_cast<float>(std::exp(static_cast<double>(exponent)));
  }
  Tensor out = Tensor::zeros({n, embedding_dim});
  float* o = out.data<float>();
  for (int64_t r = 0; r < n; ++r) {
    float* row = o + r * embedding_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double arg = static_cast<double>(scale * (timesteps[r] * freqs[i]));
      const float s = static_cast<float>(std::sin(arg)), c = static_cast<float>(std::cos(arg));
      // [sin | cos], or [cos | sin] when flipped; an odd embedding_dim leaves the last column 0.
      row[i] = flip_sin_to_cos ? c : s;
      row[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

WanRotaryPosEmbed::WanRotaryPosEmbed(int64_t attention_head_dim, int64_t max_seq_len, double theta)
    : head_dim_(attention_head_dim), max_seq_len_(max_seq_len) {
  VGEN_CHECK(attention_head_dim > 0 && attention_head_dim % 2 == 0,
             "WanRotaryPosEmbed: attention_head_dim {} must be positive and even", attention_head_dim);
  VGEN_CHECK(max_seq_len > 0, "WanRotaryPosEmbed: max_seq_len {} must be positive", max_seq_len);
  h_dim_ = w_dim_ = 2 * (attention_head_dim / 6);
  t_dim_ = attention_head_dim - h_dim_ - w_dim_;
  freqs_cos_.resize(static_cast<size_t>(max_seq_len * head_dim_));
  freqs_sin_.resize(freqs_cos_.size());
  // get_1d_rotary_pos_embed(part, max_seq_len, theta, use_real, repeat_interleave_real, float64)
  // per part, concatenated along the channels.
  int64_t offset = 0;
  for (const int64_t part : {t_dim_, h_dim_, w_dim_}) {
    for (int64_t i = 0; i < part / 2; ++i) {
      const double freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(part));
      for (int64_t pos = 0; pos < max_seq_len; ++pos) {
        const double angle = static_cast<double>(pos) * freq;
        const size_t at = static_cast<size_t>(pos * head_dim_ + offset + 2 * i);
        freqs_cos_[at] = freqs_cos_[at + 1] = static_cast<float>(std::cos(angle));
        freqs_sin_[at] = freqs_sin_[at + 1] = static_cast<float>(std::sin(angle));
      }
    }
    offset += part;
  }
}

WanRotaryPosEmbed::Tables WanRotaryPosEmbed::forward(int64_t frames, int64_t height, int64_t width) const {
  VGEN_CHECK(frames > 0 && height > 0 && width > 0, "WanRotaryPosEmbed: empty grid {}x{}x{}", frames, height, width);
  if (frames > max_seq_len_ || height > max_seq_len_ || width > max_seq_len_)
    fail("WanRotaryPosEmbed: grid of {}x{}x{} patches exceeds rope_max_seq_len {}", frames, height, width,
         max_seq_len_);
  const int64_t S = frames * height * width, D = head_dim_;
  Tables t{Tensor::empty({S, D}), Tensor::empty({S, D})};
  float* c = t.cos.data<float>();
  float* s = t.sin.data<float>();
  // Token (f, h, w) takes the t part of row f, the h part of row h and the w part of row w.
  const struct { int64_t begin, size; } parts[3] = {{0, t_dim_}, {t_dim_, h_dim_}, {t_dim_ + h_dim_, w_dim_}};
  for (int64_t f = 0; f < frames; ++f) {
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t w = 0; w < width; ++w) {
        const int64_t token = (f * height + h) * width + w;
        const int64_t rows[3] = {f, h, w};
        for (int p = 0; p < 3; ++p) {
          const size_t src = static_cast<size_t>(rows[p] * D + parts[p].begin);
          const int64_t dst = token * D + parts[p].begin;
          std::copy_n(freqs_cos_.data() + src, parts[p].size, c + dst);
          std::copy_n(freqs_sin_.data() + src, parts[p].size, s + dst);
        }
      }
    }
  }
  return t;
}

}  // namespace vgen
