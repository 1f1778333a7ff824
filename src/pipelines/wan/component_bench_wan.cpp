#include "pipelines/wan/component_bench_wan.h"

#include <cstdio>

#include "core/random.h"
#include "io/safetensors.h"
#include "models/wan/autoencoder_kl_wan.h"
#include "models/wan/transformer_wan.h"

namespace vgen {
namespace {

// A component folder holds no VAE/pipeline config to take these from: Wan2.1's VAE compresses
// 4x in time and 8x in space, and the 1.3B model's default size is 832x480 with 81 frames.
constexpr int64_t kTemporalCompression = 4, kSpatialCompression = 8;
constexpr int64_t kDefaultHeight = 480, kDefaultWidth = 832, kDefaultNumFrames = 81;

struct PixelSize {
  int64_t height, width, num_frames;
  int64_t latent_frames() const { return (num_frames - 1) / kTemporalCompression + 1; }
};

PixelSize pixel_size(const ComponentBenchOptions& o) {
  const PixelSize s{o.height.value_or(kDefaultHeight), o.width.value_or(kDefaultWidth),
                    o.num_frames.value_or(kDefaultNumFrames)};
  if (s.height % kSpatialCompression != 0 || s.width % kSpatialCompression != 0 || s.height <= 0 || s.width <= 0)
    fail("bench: height and width must be positive multiples of {} (got {}x{})", kSpatialCompression, s.width,
         s.height);
  if (s.num_frames < 1 || (s.num_frames - 1) % kTemporalCompression != 0)
    fail("bench: num_frames must be of the form {}k+1 (got {})", kTemporalCompression, s.num_frames);
  return s;
}

// Random data (never zeros: they can run faster than real data).
Tensor random_on(const Shape& shape, DType dtype, Device device, uint64_t seed) {
  return randn(shape, seed).to(dtype).to(device);
}

}  // namespace

ComponentBench wan_transformer_bench(const std::string& dir, const ComponentBenchOptions& o,
                                     std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const PixelSize size = pixel_size(o);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.dtype;
  std::shared_ptr<WanTransformer3DModel> model = WanTransformer3DModel::from_pretrained(dir, dtype, device);
  model->enable_cuda_graphs(context->settings().cuda_graphs && device.is_cuda());
  const auto& c = model->config();
  const int64_t lt = size.latent_frames();
  const int64_t lh = size.height / kSpatialCompression, lw = size.width / kSpatialCompression;
  Tensor x = random_on({1, c.in_channels, lt, lh, lw}, dtype, device, 4);
  Tensor t = Tensor::full({1}, 999.0f);
  Tensor ctx = random_on({1, o.text_len, c.text_dim}, dtype, device, 5);
  if (!o.inputs.empty()) {
    const WeightStore in = WeightStore::open_files({o.inputs});
    x = in.get("hidden_states").to(dtype).to(device);
    t = in.get("timestep").to(DType::F32);
    ctx = in.get("encoder_hidden_states").to(dtype).to(device);
  }
  if (!o.save_output.empty()) {
    const Tensor y = model->forward(x, t, ctx).to(Device::cpu()).to(DType::F32).contiguous();
    std::FILE* f = std::fopen(o.save_output.c_str(), "wb");
    VGEN_CHECK(f != nullptr, "bench: cannot write '{}'", o.save_output);
    const size_t n = std::fwrite(y.raw_data(), 1, y.nbytes(), f);
    std::fclose(f);
    VGEN_CHECK(n == y.nbytes(), "bench: short write to '{}'", o.save_output);
  }
  const int64_t tokens = lt * (lh / c.patch_size[1]) * (lw / c.patch_size[2]);
  ComponentBench b;
  b.run = [model, x, t, ctx] { (void)model->forward(x, t, ctx); };
  b.facts = {{"h", size.height}, {"w", size.width}, {"frames", size.num_frames}, {"tokens", tokens}};
  b.after = [model] { return nlohmann::json{{"cuda_graph_replays", model->graphed_step().replays()}}; };
  b.context = std::move(context);
  return b;
}

ComponentBench wan_vae_bench(const std::string& dir, const ComponentBenchOptions& o,
                             std::shared_ptr<ExecutionContext> context) {
  ContextScope scope(*context);
  const PixelSize size = pixel_size(o);
  const Device device = o.pipeline.device;
  const DType dtype = o.pipeline.vae_dtype;
  std::shared_ptr<AutoencoderKLWan> vae = AutoencoderKLWan::from_pretrained(dir, dtype, device, {.encoder = false});
  const Tensor z = random_on({1, vae->config().z_dim, size.latent_frames(), size.height / kSpatialCompression,
                              size.width / kSpatialCompression},
                             dtype, device, 6);
  ComponentBench b;
  b.run = [vae, z] { (void)vae->decode(z); };
  b.facts = {{"h", size.height}, {"w", size.width}, {"frames", size.num_frames}};
  b.after = [] { return nlohmann::json::object(); };
  b.context = std::move(context);
  return b;
}

}  // namespace vgen
