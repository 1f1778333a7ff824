// vgen._vgen: the nanobind extension under the `vgen` Python package (python/vgen/). It exposes
// the C++ API (api/visual_gen.h) as directly as it can; the Python layer gives it
// TensorRT-LLM VisualGen's names (VisualGen, VisualGenArgs, VisualGenParams) and converts
// PIL images. Engine options go through the engine YAML's parser (config/engine_config.h):
// the Python layer sends its sections as JSON text, which is YAML, so that the keys, the
// defaults and the validation messages are the YAML config's, and a key added there appears
// here without a change.
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "api/model_path.h"
#include "api/visual_gen.h"
#include "config/engine_config.h"
#include "core/error.h"
#include "media/image.h"
#include "media/mp4.h"
#include "nn/lora.h"

namespace nb = nanobind;
using namespace vgen;

namespace {

using FramesIn = nb::ndarray<const uint8_t, nb::c_contig, nb::device::cpu>;

// A NumPy uint8 array [H, W, 3] (or [F, H, W, 3] for frames) copied into a CPU tensor; `what`
// names the argument in errors.
Tensor tensor_from_array(const FramesIn& a, size_t ndim, const char* what) {
  if (a.ndim() != ndim || a.shape(ndim - 1) != 3)
    fail("{}: expected a uint8 array of shape {} (RGB), got {} dimensions", what,
         ndim == 3 ? "[H, W, 3]" : "[F, H, W, 3]", a.ndim());
  Shape shape;
  for (size_t i = 0; i < ndim; ++i) shape.push_back(static_cast<int64_t>(a.shape(i)));
  for (int64_t s : shape)
    if (s <= 0) fail("{}: empty array (shape has a 0)", what);
  Tensor t = Tensor::empty(shape, DType::U8);
  std::memcpy(t.raw_data(), a.data(), t.nbytes());
  return t;
}

// A CPU uint8 tensor as a NumPy array that shares its memory (the array owns a reference).
nb::ndarray<nb::numpy, uint8_t> array_from_tensor(Tensor t) {
  if (t.device() != Device::cpu()) t = t.to(Device::cpu());
  if (!t.is_contiguous()) t = t.contiguous();
  VGEN_CHECK(t.dtype() == DType::U8, "internal: frames are not uint8");
  std::vector<size_t> shape;
  for (int64_t s : t.shape()) shape.push_back(static_cast<size_t>(s));
  auto* owner = new Tensor(t);
  nb::capsule keep(owner, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  return nb::ndarray<nb::numpy, uint8_t>(owner->raw_data(), shape.size(), shape.data(), keep);
}

nb::dict resolved_to_dict(const ResolvedParams& r) {
  nb::dict d;
  d["prompt"] = r.prompt;
  d["negative_prompt"] = r.negative_prompt;
  d["height"] = r.height;
  d["width"] = r.width;
  d["num_frames"] = r.num_frames;
  d["num_inference_steps"] = r.num_inference_steps;
  d["guidance_scale"] = r.guidance_scale;
  d["guidance_scale_2"] = r.guidance_scale_2;
  d["guidance_rescale"] = r.guidance_rescale;
  d["max_sequence_length"] = r.max_sequence_length;
  d["seed"] = r.seed;
  d["timesteps"] = r.timesteps;
  d["sigmas"] = r.sigmas;
  d["boundary_step"] = r.boundary_step;
  return d;
}

// The model as loaded, with what generate needs around the C++ VisualGen: the cancel flag
// another thread may raise, and the Python progress callback's exception carried across the
// C++ frames.
class PyVisualGen {
 public:
  PyVisualGen(const std::string& model_path, const PipelineOptions& options) : gen_(model_path, options) {}

  ResolvedParams resolve(const GenerationParams& p) { return gen_.pipeline().resolve(p); }

  // Runs resolved requests (max_batch at a time through the transformer) with the GIL
  // released; `callback(step, total)` is called with the GIL held and cancels by returning
  // False or raising (the exception is re-raised here).
  std::vector<GenerationOutput> generate(const std::vector<ResolvedParams>& requests, int max_batch,
                                         nb::object callback) {
    cancel_requested_ = false;
    std::optional<nb::python_error> raised;
    const bool has_callback = !callback.is_none();
    StepCallback on_step = [&](const StepProgress& p) -> bool {
      if (cancel_requested_) return false;
      if (!has_callback) return true;
      nb::gil_scoped_acquire gil;
      try {
        nb::object r = callback(p.step, p.total);
        return !r.is(Py_False);  // only an explicit False cancels
      } catch (nb::python_error& e) {
        raised.emplace(std::move(e));
        return false;
      }
    };
    std::vector<GenerationOutput> outs;
    try {
      nb::gil_scoped_release release;
      outs = gen_.generate_batch(requests, max_batch, on_step);
    } catch (const Cancelled&) {
      if (raised) throw *raised;
      throw;
    }
    return outs;
  }

  void cancel() { cancel_requested_ = true; }
  VisualGen& gen() { return gen_; }

 private:
  VisualGen gen_;
  std::atomic<bool> cancel_requested_{false};
};

PipelineOptions make_options(const std::string& device, const std::optional<std::string>& dtype,
                             const std::optional<std::string>& vae_dtype, const std::string& engine_json,
                             const std::vector<std::pair<std::string, double>>& lora,
                             const std::vector<std::pair<std::string, double>>& lora_2, bool lora_ignore_unmatched,
                             int lora_cached_variants, const std::optional<std::string>& scheduler,
                             const std::optional<double>& flow_shift) {
  // The engine sections exactly as `vgen serve --config` reads them (keys, defaults, checks).
  const EngineConfig config = parse_engine_config(engine_json, "VisualGenArgs");
  require_implemented(config, "VisualGenArgs");
  PipelineOptions o = default_pipeline_options(resolve_device(device));
  if (dtype) o.dtype = parse_compute_dtype(*dtype);
  if (vae_dtype) o.vae_dtype = parse_compute_dtype(*vae_dtype);
  apply_engine_config(config, o);  // as `vgen serve --config` applies it
  if (lora_cached_variants < 1 || lora_cached_variants > 16)
    fail("lora_cached_variants: must be 1 to 16, got {}", lora_cached_variants);
  o.lora_cached_variants = lora_cached_variants;
  // LoRA files are read and their keys converted before the model loads, as the CLI does.
  for (const auto& [name, given, specs] : {std::tuple{"lora", &lora, &o.lora}, std::tuple{"lora_2", &lora_2, &o.lora_2}})
    for (const auto& [path, scale] : *given) {
      nn::LoraAdapterSpec spec{path, scale};
      if (!std::filesystem::is_regular_file(spec.path)) fail("{} {}: no such file", name, spec.path);
      nn::LoraSet({spec}, lora_ignore_unmatched);
      specs->push_back(std::move(spec));
    }
  o.lora_ignore_unmatched = lora_ignore_unmatched;
  o.scheduler.scheduler = scheduler;
  if (flow_shift && !(*flow_shift > 0)) fail("flow_shift: must be a positive number, got {}", *flow_shift);
  o.scheduler.flow_shift = flow_shift;
  return o;
}

}  // namespace

NB_MODULE(_vgen, m) {
  m.doc() = "vgen's C++ API (use the vgen package: vgen.VisualGen, VisualGenArgs, VisualGenParams)";
  m.attr("__version__") = VGEN_VERSION;

  // vgen::Error -> vgen.Error (a RuntimeError); a cancelled generation -> vgen.Cancelled.
  // nanobind tries the translator registered last first: Cancelled before Error.
  static nb::exception<Error> error_type(m, "Error", PyExc_RuntimeError);
  static nb::exception<Cancelled> cancelled_type(m, "Cancelled", error_type.ptr());

  nb::class_<PipelineOptions>(m, "PipelineOptions")
      .def_prop_ro("device", [](const PipelineOptions& o) { return o.device.str(); })
      .def_prop_ro("dtype", [](const PipelineOptions& o) { return std::string(dtype_name(o.dtype)); })
      .def_prop_ro("vae_dtype", [](const PipelineOptions& o) -> std::optional<std::string> {
        if (!o.vae_dtype) return std::nullopt;  // the model family's default
        return std::string(dtype_name(*o.vae_dtype));
      })
      .def_prop_ro("attention_backend", [](const PipelineOptions& o) { return o.execution.attention_backend; })
      .def_prop_ro("cuda_graphs", [](const PipelineOptions& o) { return o.execution.cuda_graphs; })
      .def_prop_ro("conv_autotune", [](const PipelineOptions& o) { return o.execution.conv_autotune; })
      .def_prop_ro("gemm_autotune", [](const PipelineOptions& o) { return o.execution.gemm_autotune; })
      .def_prop_ro("offload_text_encoder", [](const PipelineOptions& o) { return o.offload_text_encoder; })
      .def_prop_ro("offload_idle_expert", [](const PipelineOptions& o) { return o.offload_idle_expert; })
      .def_prop_ro("vae_chunk_frames", [](const PipelineOptions& o) { return o.vae_chunk_frames; });

  m.def("make_options", &make_options, nb::arg("device"), nb::arg("dtype"), nb::arg("vae_dtype"),
        nb::arg("engine_json"), nb::arg("lora"), nb::arg("lora_2"), nb::arg("lora_ignore_unmatched"),
        nb::arg("lora_cached_variants"), nb::arg("scheduler"), nb::arg("flow_shift"),
        "PipelineOptions from VisualGenArgs' fields (the engine sections as JSON, parsed as the YAML config)");

  nb::class_<GenerationParams>(m, "GenerationParams")
      .def(nb::init<>())
      .def_rw("prompt", &GenerationParams::prompt)
      .def_rw("negative_prompt", &GenerationParams::negative_prompt)
      .def_rw("height", &GenerationParams::height)
      .def_rw("width", &GenerationParams::width)
      .def_rw("num_frames", &GenerationParams::num_frames)
      .def_rw("num_inference_steps", &GenerationParams::num_inference_steps)
      .def_rw("timesteps", &GenerationParams::timesteps)
      .def_rw("sigmas", &GenerationParams::sigmas)
      .def_rw("boundary_step", &GenerationParams::boundary_step)
      .def_rw("guidance_scale", &GenerationParams::guidance_scale)
      .def_rw("guidance_scale_2", &GenerationParams::guidance_scale_2)
      .def_rw("guidance_rescale", &GenerationParams::guidance_rescale)
      .def_rw("max_sequence_length", &GenerationParams::max_sequence_length)
      .def_rw("seed", &GenerationParams::seed)
      .def("set_image", [](GenerationParams& p, FramesIn a) { p.image = tensor_from_array(a, 3, "image"); })
      .def("set_last_image",
           [](GenerationParams& p, FramesIn a) { p.last_image = tensor_from_array(a, 3, "last_image"); })
      .def("set_latents", [](GenerationParams& p, nb::ndarray<const float, nb::c_contig, nb::device::cpu> a) {
        Shape shape;
        for (size_t i = 0; i < a.ndim(); ++i) shape.push_back(static_cast<int64_t>(a.shape(i)));
        p.latents = Tensor::empty(shape, DType::F32);
        std::memcpy(p.latents.raw_data(), a.data(), p.latents.nbytes());
      });

  nb::class_<ResolvedParams>(m, "ResolvedParams")
      .def("as_dict", &resolved_to_dict)
      .def_ro("seed", &ResolvedParams::seed)
      .def_ro("num_frames", &ResolvedParams::num_frames)
      .def_ro("max_sequence_length", &ResolvedParams::max_sequence_length)
      .def_ro("prompt", &ResolvedParams::prompt)
      .def_ro("negative_prompt", &ResolvedParams::negative_prompt)
      .def_ro("guidance_scale", &ResolvedParams::guidance_scale);

  nb::class_<GenerationOutput>(m, "GenerationOutput")
      .def("frames", [](const GenerationOutput& o) { return array_from_tensor(o.frames); })
      .def_ro("fps", &GenerationOutput::fps)
      .def_ro("timings", &GenerationOutput::timings);

  nb::class_<PyVisualGen>(m, "VisualGen")
      .def(
          "__init__",
          [](PyVisualGen* self, const std::string& model_path, const PipelineOptions& options) {
            nb::gil_scoped_release release;
            new (self) PyVisualGen(model_path, options);
          },
          nb::arg("model_path"), nb::arg("options"))
      .def("resolve", &PyVisualGen::resolve)
      .def("generate", &PyVisualGen::generate, nb::arg("requests"), nb::arg("max_batch"), nb::arg("callback").none())
      .def("cancel", &PyVisualGen::cancel)
      .def("metadata", [](PyVisualGen& g, const ResolvedParams& r, double fps) { return g.gen().metadata(r, fps); })
      .def("prompt_token_count", [](PyVisualGen& g, const std::string& p) { return g.gen().prompt_token_count(p); })
      .def_prop_ro("model_path", [](PyVisualGen& g) { return g.gen().model_path(); })
      .def_prop_ro("class_name", [](PyVisualGen& g) { return g.gen().pipeline().class_name(); })
      .def_prop_ro("describe", [](PyVisualGen& g) { return g.gen().pipeline().describe(); })
      .def_prop_ro("capabilities", [](PyVisualGen& g) {
        const PipelineCapabilities& c = g.gen().pipeline().capabilities();
        nb::dict d;
        d["tasks"] = c.tasks;
        d["image_input"] = c.image_input;
        d["image_required"] = c.image_required;
        d["last_image_input"] = c.last_image_input;
        d["last_image_required"] = c.last_image_required;
        d["lora"] = c.lora;
        d["two_experts"] = c.two_experts;
        d["default_fps"] = c.default_fps;
        d["temporal_multiple"] = c.temporal_multiple;
        d["spatial_multiple"] = c.spatial_multiple;
        d["default_height"] = c.default_height;
        d["default_width"] = c.default_width;
        d["default_num_frames"] = c.default_num_frames;
        d["default_num_inference_steps"] = c.default_num_inference_steps;
        d["default_guidance_scale"] = c.default_guidance_scale;
        d["default_guidance_scale_2"] = c.default_guidance_scale_2;
        d["default_max_sequence_length"] = c.default_max_sequence_length;
        return d;
      });

  m.def(
      "write_mp4",
      [](const std::string& path, FramesIn frames, double fps, int crf, const std::string& preset,
         const media::Metadata& metadata) {
        if (!(fps > 0)) fail("fps: must be a positive number, got {}", fps);
        if (crf < 0 || crf > 51) fail("crf: must be 0 to 51, got {}", crf);
        const Tensor t = tensor_from_array(frames, 4, "frames");
        media::VideoEncodeOptions enc;
        enc.fps = fps;
        enc.crf = crf;
        enc.preset = preset;
        enc.metadata = metadata;
        nb::gil_scoped_release release;
        media::write_mp4(path, t, enc);
      },
      nb::arg("path"), nb::arg("frames"), nb::arg("fps"), nb::arg("crf"), nb::arg("preset"), nb::arg("metadata"));
  m.def(
      "write_image",
      [](const std::string& path, FramesIn image, int quality, const media::Metadata& metadata) {
        if (quality < 1 || quality > 100) fail("quality: must be 1 to 100, got {}", quality);
        const Tensor t = tensor_from_array(image, 3, "image");
        nb::gil_scoped_release release;
        media::write_image(path, t, quality, metadata);
      },
      nb::arg("path"), nb::arg("image"), nb::arg("quality"), nb::arg("metadata"));
  m.def("read_image", [](const std::string& path) { return array_from_tensor(media::read_image(path)); },
        "Decodes a PNG, JPEG or WebP file as PIL's Image.open(f).convert('RGB') does: uint8 [H, W, 3]");
  m.def("resolve_model_path", &resolve_model_path, "A checkpoint folder, or a Hugging Face repo id found in the HF cache");
  m.def("random_seed", &random_seed);
}
