#include "pipelines/wan/component_bench_wan.h"

#include <filesystem>

#include "core/allocator.h"
#include "core/random.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "models/clip/clip_vision_model.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/transformer_wan.h"

namespace vgen {
namespace {

// Defaults when a component folder holds no VAE/pipeline config to take them from: Wan2.1's
// VAE compresses 4x in time and 8x in space, and the 1.3B model's default size is 832x480
// with 81 frames.
constexpr int64_t kTemporalCompression = 4, kSpatialCompression = 8;
constexpr int64_t kDefaultHeight = 480, kDefaultWidth = 832, kDefaultNumFrames = 81;

struct PixelSize {
  int64_t height, width, num_frames;
  int64_t temporal, spatial;  // the VAE's compression
  int64_t latent_frames() const { return (num_frames - 1) / temporal + 1; }
  int64_t latent_height() const { return height / spatial; }
  int64_t latent_width() const { return width / spatial; }
};

PixelSize pixel_size(const ComponentBenchOptions& o, int64_t temporal, int64_t spatial) {
  const PixelSize s{o.height.value_or(kDefaultHeight), o.width.value_or(kDefaultWidth),
                    o.num_frames.value_or(kDefaultNumFrames), temporal, spatial};
  if (s.height % spatial != 0 || s.width % spatial != 0 || s.height <= 0 || s.width <= 0)
    fail("bench: height and width must be positive multiples of {} (got {}x{})", spatial, s.width, s.height);
  if (s.num_frames < 1 || (s.num_frames - 1) % temporal != 0)
    fail("bench: num_frames must be of the form {}k+1 (got {})", temporal, s.num_frames);
  return s;
}

// The VAE's spatial compression for a denoiser in `dir`: the option, else a `vae` folder beside it.
int64_t denoiser_spatial_compression(const std::string& dir, const ComponentBenchOptions& o) {
  if (o.vae_scale_factor_spatial) return *o.vae_scale_factor_spatial;
  const std::filesystem::path vae_config = std::filesystem::path(dir).parent_path() / "vae" / "config.json";
  if (!std::filesystem::exists(vae_config)) return kSpatialCompression;
  return AutoencoderKLWanConfig::from_json(read_json_file(vae_config.string()), vae_config.string()).scale_factor_spatial;
}

}  // namespace

ComponentBench wan_transformer_bench(const std::string& dir, const ComponentBenchOptions& o,
                                     std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const PixelSize size = pixel_size(o, kTemporalCompression, denoiser_spatial_compression(dir, o));
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.dtype;
  // The memory the weights take: what the load added to the device's allocator.
  const size_t before = allocator_for(device).allocated_bytes();
  std::shared_ptr<WanTransformer3DModel> model =
      WanTransformer3DModel::from_pretrained(dir, dtype, device, false, {}, false, o.pipeline.quant);
  const double weights_gib = (allocator_for(device).allocated_bytes() - before) / double(1ull << 30);
  model->enable_cuda_graphs(context->settings().cuda_graphs && device.is_cuda());
  const auto& c = model->config();
  const int64_t lt = size.latent_frames();
  const int64_t lh = size.latent_height(), lw = size.latent_width();
  Tensor x = bench_random({1, c.in_channels, lt, lh, lw}, dtype, device, 4);
  Tensor t = Tensor::full({1}, 999.0f);
  Tensor ctx = bench_random({1, o.text_len, c.text_dim}, dtype, device, 5);
  // Image-to-video transformers also take CLIP's 257 image tokens (two images for FLF2V).
  Tensor image;
  if (c.image_dim) image = bench_random({c.pos_embed_seq_len ? 2 : 1, 257, *c.image_dim}, dtype, device, 7);
  if (!o.inputs.empty()) {
    const WeightStore in = WeightStore::open_files({o.inputs});
    x = in.get("hidden_states").to(dtype).to(device);
    t = in.get("timestep").to(DType::F32);
    ctx = in.get("encoder_hidden_states").to(dtype).to(device);
  }
  if (!o.save_output.empty()) bench_save_raw_f32(model->forward(x, t, ctx, image), o.save_output);
  const int64_t tokens = lt * (lh / c.patch_size[1]) * (lw / c.patch_size[2]);
  ComponentBench b;
  b.run = [model, x, t, ctx, image] { (void)model->forward(x, t, ctx, image); };
  b.facts = {{"h", size.height}, {"w", size.width}, {"frames", size.num_frames}, {"tokens", tokens},
             {"weights_gib", weights_gib}, {"quant_algo", quant_algo_name(o.pipeline.quant.quant_algo)},
             {"quant_fast_accum", o.pipeline.quant.fast_accum_on()}};
  b.after = [model] { return nlohmann::json{{"cuda_graph_replays", model->graphed_step().replays()}}; };
  b.context = std::move(context);
  return b;
}

ComponentBench wan_vae_bench(const std::string& dir, const ComponentBenchOptions& o,
                             std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.vae_dtype_or(DType::F32);
  std::shared_ptr<AutoencoderKLWan> vae = AutoencoderKLWan::from_pretrained(
      dir, dtype, device, AutoencoderKLWan::Parts{.encoder = o.encode, .decoder = !o.encode});
  vae->set_decode_chunk_frames(o.pipeline.vae_chunk_frames);
  const AutoencoderKLWanConfig& c = vae->config();
  const PixelSize size = pixel_size(o, c.scale_factor_temporal, c.scale_factor_spatial);
  ComponentBench b;
  // The input: random, or "video" (encode) / "z" (decode) from --inputs.
  const char* name = o.encode ? "video" : "z";
  // A video has in_channels / patch_size^2 channels (the Wan2.2 VAE patchifies 3 into 12).
  const int64_t video_channels = c.in_channels / (c.patch() * c.patch());
  Tensor input = o.encode ? bench_random({1, video_channels, size.num_frames, size.height, size.width}, dtype, device, 6)
                          : bench_random({1, c.z_dim, size.latent_frames(), size.latent_height(), size.latent_width()},
                                      dtype, device, 6);
  if (!o.inputs.empty()) input = WeightStore::open_files({o.inputs}).get(name).to(dtype).to(device);
  const auto run = [vae, input, encode = o.encode] { return encode ? vae->encode(input) : vae->decode(input); };
  if (!o.save_output.empty()) bench_save_raw_f32(run(), o.save_output);
  b.run = [run] { (void)run(); };
  b.facts = {{"h", size.height}, {"w", size.width}, {"frames", size.num_frames}, {"encode", o.encode},
             {"vae_chunk_frames", o.pipeline.vae_chunk_frames},
             {"dtype", dtype_name(dtype)}};
  b.after = [] { return nlohmann::json::object(); };
  b.context = std::move(context);
  return b;
}

ComponentBench clip_vision_bench(const std::string& dir, const ComponentBenchOptions& o,
                                 std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.dtype;
  std::shared_ptr<CLIPVisionModel> model = CLIPVisionModel::from_pretrained(dir, dtype, device);
  const int64_t s = model->config().image_size;
  const Tensor pixels = bench_random({1, 3, s, s}, dtype, device, 8);
  ComponentBench b;
  b.run = [model, pixels] { (void)model->penultimate_hidden_states(pixels); };
  b.facts = {{"image_size", s}};
  b.after = [] { return nlohmann::json::object(); };
  b.context = std::move(context);
  return b;
}

}  // namespace vgen
