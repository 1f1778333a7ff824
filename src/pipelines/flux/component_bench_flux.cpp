#include "pipelines/flux/component_bench_flux.h"

#include <filesystem>

#include "core/random.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "models/autoencoder_kl/autoencoder_kl.h"
#include "models/flux/transformer_flux.h"
#include "pipelines/flux/pipeline_flux_latents.h"

namespace vgen {
namespace {

constexpr int64_t kDefaultSize = 1024;  // FLUX.1's default height and width

// The VAE's spatial compression for a transformer in `dir`: the option, else a `vae` folder
// beside it, else FLUX.1's 8.
int64_t vae_scale_factor(const std::string& dir, const ComponentBenchOptions& o) {
  if (o.vae_scale_factor_spatial) return *o.vae_scale_factor_spatial;
  const std::filesystem::path vae_config = std::filesystem::path(dir).parent_path() / "vae" / "config.json";
  if (!std::filesystem::exists(vae_config)) return 8;
  return AutoencoderKLConfig::from_json(read_json_file(vae_config.string()), vae_config.string()).scale_factor();
}

std::pair<int64_t, int64_t> image_size(const ComponentBenchOptions& o, int64_t multiple) {
  const int64_t h = o.height.value_or(kDefaultSize), w = o.width.value_or(kDefaultSize);
  if (h <= 0 || w <= 0 || h % multiple != 0 || w % multiple != 0)
    fail("bench: height and width must be positive multiples of {} (got {}x{})", multiple, w, h);
  if (o.num_frames && *o.num_frames != 1) fail("bench: FLUX makes images: num_frames must be 1 (got {})", *o.num_frames);
  return {h, w};
}

}  // namespace

ComponentBench flux_transformer_bench(const std::string& dir, const ComponentBenchOptions& o,
                                      std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const int64_t f = vae_scale_factor(dir, o);
  const auto [h, w] = image_size(o, 2 * f);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.dtype;
  std::shared_ptr<FluxTransformer2DModel> model = FluxTransformer2DModel::from_pretrained(dir, dtype, device);
  model->enable_cuda_graphs(context->settings().cuda_graphs && device.is_cuda());
  const auto& c = model->config();
  const int64_t lh = h / f / 2, lw = w / f / 2, S = lh * lw;
  Tensor x = bench_random({1, S, c.in_channels}, dtype, device, 4);
  Tensor ctx = bench_random({1, o.text_len, c.joint_attention_dim}, dtype, device, 5);
  Tensor pooled = bench_random({1, c.pooled_projection_dim}, dtype, device, 6);
  Tensor t = Tensor::full({1}, 1.0f);
  Tensor guidance = c.guidance_embeds ? Tensor::full({1}, 3.5f) : Tensor();
  if (!o.inputs.empty()) {
    const WeightStore in = WeightStore::open_files({o.inputs});
    x = in.get("hidden_states").to(dtype).to(device);
    ctx = in.get("encoder_hidden_states").to(dtype).to(device);
    pooled = in.get("pooled_projections").to(dtype).to(device);
    t = in.get("timestep").to(DType::F32);
    if (c.guidance_embeds) guidance = in.get("guidance").to(DType::F32);
  }
  const Tensor img_ids = flux_latent_image_ids(lh, lw);
  const Tensor txt_ids = Tensor::zeros({ctx.size(1), 3});
  const auto run = [model, x, ctx, pooled, t, guidance, img_ids, txt_ids] {
    return model->forward(x, ctx, pooled, t, img_ids, txt_ids, guidance);
  };
  if (!o.save_output.empty()) bench_save_raw_f32(run(), o.save_output);
  ComponentBench b;
  b.run = [run] { (void)run(); };
  b.facts = {{"h", h}, {"w", w}, {"tokens", S}, {"text_tokens", ctx.size(1)}};
  b.after = [model] { return nlohmann::json{{"cuda_graph_replays", model->graphed_step().replays()}}; };
  b.context = std::move(context);
  return b;
}

ComponentBench autoencoder_kl_bench(const std::string& dir, const ComponentBenchOptions& o,
                                    std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.vae_dtype_or(o.pipeline.dtype);
  if (o.pipeline.vae_chunk_frames != 1)
    fail("bench: vae_chunk_frames {}: AutoencoderKL decodes one image; the option is the Wan VAE's",
         o.pipeline.vae_chunk_frames);
  std::shared_ptr<AutoencoderKL> vae = AutoencoderKL::from_pretrained(dir, dtype, device);
  const AutoencoderKLConfig& c = vae->config();
  const int64_t f = c.scale_factor();
  const auto [h, w] = image_size(o, f);
  const char* name = o.encode ? "image" : "z";
  Tensor input = o.encode ? bench_random({1, c.in_channels, h, w}, dtype, device, 6)
                          : bench_random({1, c.latent_channels, h / f, w / f}, dtype, device, 6);
  if (!o.inputs.empty()) input = WeightStore::open_files({o.inputs}).get(name).to(dtype).to(device);
  const auto run = [vae, input, encode = o.encode] { return encode ? vae->encode(input).mean : vae->decode(input); };
  if (!o.save_output.empty()) bench_save_raw_f32(run(), o.save_output);
  ComponentBench b;
  b.run = [run] { (void)run(); };
  b.facts = {{"h", h}, {"w", w}, {"frames", 1}, {"encode", o.encode}, {"dtype", dtype_name(dtype)}};
  b.after = [] { return nlohmann::json::object(); };
  b.context = std::move(context);
  return b;
}

}  // namespace vgen
