// Attention on CUDA: cuDNN's fused SDPA (through the cuDNN frontend graph API) for BF16/F16,
// the float32 reference (attention_ref.cu) for everything else; see attention.h.
//
// q, k, v are usually permuted views of [B, S, H, D] projections: their strides go to cuDNN
// as they are, and the output is written into a [B, Sq, H, D] buffer returned as a permuted
// [B, H, Sq, D] view, so that the caller's permute back to [B, Sq, H * D] costs nothing.
//
// Built graphs are cached per (dtype, shapes, strides, pointer alignments, bias layout, scale);
// a combination cuDNN rejects is cached too (as rejected) and goes to the reference.
#include "backends/cuda/attention.h"

#include <cudnn.h>
#include <cudnn_frontend.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cudnn_common.h"
#include "backends/cuda/flash_attention_sm90.h"
#include "backends/cuda/sage_attention_sm90.h"
#include "core/random.h"
#include "ops/ops.h"

namespace vgen::cuda {

void attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale,
                         const Tensor& out);
void attention_math(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale,
                    const Tensor& out);

namespace {

namespace fe = cudnn_frontend;

// ---- kernel choice --------------------------------------------------------------------------

enum Choice : int { kCudnn = 0, kReference = 1, kFlash = 2, kAuto = 3, kSage = 4 };

// The active context's choice (CudaBackend::attention_kernel).
int choice() {
  const std::string k = active().attention_kernel();
  return k == "reference" ? kReference : k == "flash" ? kFlash : k == "auto" ? kAuto : k == "sage" ? kSage : kCudnn;
}

// "auto" takes vgen's Hopper kernel where it is the faster of the two, as measured on an H200
// (tools/bench/bench_wan.py attn): head dim 128 and at least this many keys (self-attention
// over video tokens: 645-652 TFLOP/s against cuDNN's 568-574 at 32760 and 75600 tokens; at
// 4096 keys both ~640). With fewer keys, as in cross-attention to 512 text tokens, the
// kernel's per-tile start and end are not hidden and cuDNN is faster (496 vs 431 at 769 keys).
constexpr int64_t kFlashAutoMinKeys = 4096;

// The quantized kernel, when chosen ("sage") and it takes these inputs, over key sets as long
// as "auto" gives to the flash kernel (with fewer keys, as in cross-attention to 512 text
// tokens, its pre-pass over q costs more than it saves: 224 TFLOP/s against cuDNN's 487 at
// 32760 x 512 on an H200); otherwise the exact kernels as "auto" picks them.
bool sage_takes(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  if (choice() != kSage || k.size(2) < kFlashAutoMinKeys) return false;
  const std::string why = sage_attention_sm90_rejects(q, k, v, bias);
  if (!why.empty())
    spdlog::debug("attention: the sage kernel does not take q {}, k {}, v {}: {}; an exact kernel runs", q.str(),
                  k.str(), v.str(), why);
  return why.empty();
}

// vgen's Hopper kernel, when chosen (or "auto" or "sage" and faster) and it takes these inputs;
// otherwise cuDNN's turn.
bool flash_takes(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  int c = choice();
  if (c == kSage) c = kAuto;
  if (c != kFlash && c != kAuto) return false;
  if (c == kAuto && (k.size(2) < kFlashAutoMinKeys || q.size(3) != 128)) return false;
  const std::string why = flash_attention_sm90_rejects(q, k, v, bias);
  if (!why.empty() && c == kFlash)
    spdlog::debug("attention: the flash kernel does not take q {}, k {}, v {}: {}", q.str(), k.str(), v.str(), why);
  return why.empty();
}

// ---- cuDNN SDPA -----------------------------------------------------------------------------

enum Uid : int64_t { kQ = 1, kK = 2, kV = 3, kO = 4, kBias = 5 };

struct Desc {
  std::vector<int64_t> dims, strides;
  int64_t align = 16;
};

Desc desc_of(const Tensor& t) { return {t.shape(), t.strides(), cudnn_alignment(t.raw_data())}; }

struct SdpaKind;
using SdpaState = CudnnPlans<SdpaKind>;

// The active backend's plans (each execution context has its own).
SdpaState& sdpa_state() { return active().state<SdpaState>(); }

std::string desc_str(const Desc& d) { return fmt::format("{} strides {}", shape_str(d.dims), shape_str(d.strides)); }

CudnnPlan build_plan(cudnnHandle_t handle, fe::DataType_t io, const Desc& q, const Desc& k, const Desc& v, const Desc& o,
                    const Desc* bias, float scale, std::string* why) {
  try {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(io)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](const char* name, int64_t uid, const Desc& d) {
      return g->tensor(fe::graph::Tensor_attributes()
                           .set_name(name)
                           .set_uid(uid)
                           .set_dim(d.dims)
                           .set_stride(d.strides)
                           .set_data_type(io)
                           .set_alignment(d.align));
    };
    auto Q = tensor("Q", kQ, q), K = tensor("K", kK, k), V = tensor("V", kV, v);
    auto attrs = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(false).set_attn_scale(scale);
    if (bias != nullptr) attrs.set_bias(tensor("bias", kBias, *bias));
    auto outputs = g->sdpa(Q, K, V, attrs);
    outputs[0]->set_output(true).set_uid(kO).set_dim(o.dims).set_stride(o.strides).set_data_type(io);
    fe::error_t err = g->validate();
    if (err.is_good()) err = g->build_operation_graph(handle);
    if (err.is_good()) err = g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (err.is_good()) err = g->check_support();
    if (err.is_good()) err = g->build_plans();
    return finish_plan(std::move(g), err, why);
  } catch (const std::exception& e) {
    *why = e.what();
    return {};
  }
}

// How a bias goes to cuDNN: its own dims (size 1 where it broadcasts), every dim expanded with
// stride 0, or copied out dense over the query dim.
enum class BiasForm : int64_t { None, AsIs, Expanded, Dense };

bool bias_broadcasts(const Tensor& bias, const Shape& want) {
  if (bias.dim() != 4) return false;
  for (int i = 0; i < 4; ++i)
    if (bias.size(i) != 1 && bias.size(i) != want[i]) return false;
  return true;
}

bool sdpa_operand_ok(const Tensor& t) {
  if (t.strides()[3] != 1 || cudnn_alignment(t.raw_data()) < 16) return false;
  for (int i = 0; i < 3; ++i)
    if (t.size(i) > 1 && (t.strides()[i] * static_cast<int64_t>(t.element_size())) % 16 != 0) return false;
  return true;
}

// The output's layout: [B, Sq, H, D] memory seen as [B, H, Sq, D], freshly allocated.
Desc output_desc(int64_t B, int64_t H, int64_t Sq, int64_t D) { return {{B, H, Sq, D}, {Sq * H * D, D, H * D, 1}, 16}; }

// A cuDNN plan for one call: the graph and the bias tensor in the layout it was built for.
struct Found {
  const CudnnPlan* plan = nullptr;
  BiasForm form = BiasForm::None;
  Tensor bias;
};

// Finds (building and caching when new) the cuDNN plan for this case; nullopt when cuDNN
// does not take it. The bias must already broadcast to [B, H, Sq, Sk].
std::optional<Found> find_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) {
  const DType dt = q.dtype();
  if ((dt != DType::BF16 && dt != DType::F16) || k.dtype() != dt || v.dtype() != dt) return std::nullopt;
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3), Sk = k.size(2);
  if (D % 8 != 0 || D > 256 || Sk == 0) return std::nullopt;
  if (!sdpa_operand_ok(q) || !sdpa_operand_ok(k) || !sdpa_operand_ok(v)) return std::nullopt;

  const fe::DataType_t io = dt == DType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
  const Desc dq = desc_of(q), dk = desc_of(k), dv = desc_of(v), dout = output_desc(B, H, Sq, D);
  const Shape full{B, H, Sq, Sk};
  const Tensor bias_io = bias.defined() ? bias.to(dt).contiguous() : Tensor();
  int32_t scale_bits;
  std::memcpy(&scale_bits, &scale, sizeof(scale_bits));

  const std::vector<BiasForm> forms = bias.defined()
                                          ? std::vector<BiasForm>{BiasForm::AsIs, BiasForm::Expanded, BiasForm::Dense}
                                          : std::vector<BiasForm>{BiasForm::None};
  SdpaState& st = sdpa_state();
  for (BiasForm form : forms) {
    Found found;
    found.form = form;
    found.bias = bias_io;
    Desc db;
    if (form == BiasForm::AsIs || form == BiasForm::Expanded) {
      if (bias.size(3) != Sk) continue;  // cuDNN reads bias rows with unit stride
      db = desc_of(bias_io);
      if (form == BiasForm::Expanded) {
        if (bias_io.shape() == full) continue;  // nothing to expand: the same graph as AsIs
        for (int i = 0; i < 4; ++i) {
          if (db.dims[i] == 1) db.strides[i] = 0;
          db.dims[i] = full[i];
        }
      }
    } else if (form == BiasForm::Dense) {
      const Shape dense{bias.size(0), bias.size(1), Sq, Sk};
      if (bias.shape() == dense || shape_numel(dense) > (int64_t{1} << 27)) continue;
      found.bias = ops::add(Tensor::zeros(dense, dt, q.device()), bias_io);
      db = desc_of(found.bias);
    }
    std::vector<int64_t> key{static_cast<int64_t>(dt), static_cast<int64_t>(form), scale_bits};
    for (const Desc* d : std::initializer_list<const Desc*>{&dq, &dk, &dv, &dout, &db}) {
      key.insert(key.end(), d->dims.begin(), d->dims.end());
      key.insert(key.end(), d->strides.begin(), d->strides.end());
      key.push_back(d->align);
    }

    std::lock_guard<std::mutex> lock(st.cudnn.mutex);
    auto it = st.plans.find(key);
    if (it == st.plans.end()) {
      std::string why;
      CudnnPlan plan = build_plan(st.cudnn.handle, io, dq, dk, dv, dout, form == BiasForm::None ? nullptr : &db, scale, &why);
      if (!plan.graph)
        spdlog::debug("attention: cuDNN SDPA does not take q {}, k {}, v {}{}: {}", desc_str(dq), desc_str(dk),
                      desc_str(dv), form == BiasForm::None ? std::string() : ", bias " + desc_str(db), why);
      it = st.plans.emplace(std::move(key), std::move(plan)).first;
    }
    if (!it->second.graph) continue;
    found.plan = &it->second;
    return found;
  }
  return std::nullopt;
}

// Runs cuDNN SDPA into out ([B, Sq, H, D] memory as [B, H, Sq, D]); false when cuDNN does not
// take this case.
bool run_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale, const Tensor& out) {
  const std::optional<Found> found = find_cudnn(q, k, v, bias, scale);
  if (!found) return false;
  const CudnnPlan& plan = *found->plan;
  SdpaState& st = sdpa_state();
  std::unordered_map<int64_t, void*> pack{
      {kQ, q.raw_data()}, {kK, k.raw_data()}, {kV, v.raw_data()}, {kO, out.raw_data()}};
  if (found->form != BiasForm::None) pack.emplace(kBias, found->bias.raw_data());
  std::lock_guard<std::mutex> lock(st.cudnn.mutex);
  const fe::error_t err = execute(st.cudnn, plan, pack, q.device());
  if (err.is_bad())
    fail("attention: cuDNN SDPA on q {}, k {}, v {}{} failed: {}", q.str(), k.str(), v.str(),
         bias.defined() ? ", bias " + bias.str() : std::string(), err.err_msg);
  return true;
}

void check_bias(const Tensor& q, const Tensor& k, const Tensor& bias) {
  if (!bias.defined()) return;
  const Shape full{q.size(0), q.size(1), q.size(2), k.size(2)};
  VGEN_CHECK(bias_broadcasts(bias, full), "attention: bias {} does not broadcast to {}", bias.str(), shape_str(full));
  require_float("attention", bias);
}

// 16-bit q, k, v of one dtype that cuDNN did not take: the tensor-core "math" path.
bool math_applies(const Tensor& q, const Tensor& k, const Tensor& v) {
  return (q.dtype() == DType::BF16 || q.dtype() == DType::F16) && k.dtype() == q.dtype() && v.dtype() == q.dtype();
}

}  // namespace

std::string attention_backend() {
  const int c = choice();
  return c == kReference ? "reference" : c == kFlash ? "flash" : c == kAuto ? "auto" : c == kSage ? "sage" : "cudnn";
}

std::string attention_path(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) {
  VGEN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention_path: q {}, k {}, v {} must be [B, H, S, D]",
             q.str(), k.str(), v.str());
  for (const Tensor* t : {&q, &k, &v, &bias}) require_cuda("attention_path", *t);
  check_bias(q, k, bias);
  if (scale < 0) scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  const bool empty = q.numel() == 0 || v.size(3) == 0;
  if (empty || choice() == kReference) return "reference";
  if (sage_takes(q, k, v, bias)) return "sage";
  if (flash_takes(q, k, v, bias)) return "flash";
  if (find_cudnn(q, k, v, bias, scale)) return "cudnn";
  return math_applies(q, k, v) ? "math" : "reference";
}

Tensor CudaOps::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale) {
  for (const Tensor* t : {&q, &k, &v, &bias}) require_cuda("attention", *t);
  for (const Tensor* t : {&q, &k, &v}) require_float("attention", *t);
  check_bias(q, k, bias);
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3);
  // [B, Sq, H, D] memory seen as [B, H, Sq, D].
  const Tensor out = Tensor::empty({B, Sq, H, D}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  if (out.numel() == 0) return out;
  if (sage_takes(q, k, v, bias)) {
    sage_attention_sm90(q, k, v, scale < 0 ? 1.0f / std::sqrt(static_cast<float>(D)) : scale, out);
    return out;
  }
  if (flash_takes(q, k, v, bias)) {
    flash_attention_sm90(q, k, v, scale, out);
    return out;
  }
  const bool library = choice() != kReference;
  if (library && run_cudnn(q, k, v, bias, scale, out)) return out;
  if (library && math_applies(q, k, v)) attention_math(q, k, v, bias, scale, out);
  else attention_reference(q, k, v, bias, scale, out);
  return out;
}

Tensor CudaOps::sage_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  for (const Tensor* t : {&q, &k, &v}) require_cuda("sage_attention", *t);
  const std::string why = sage_attention_sm90_rejects(q, k, v, {});
  VGEN_CHECK(why.empty(), "sage_attention: the quantized kernel does not take q {}, k {}, v {}: {}", q.str(), k.str(),
             v.str(), why);
  const Tensor out =
      Tensor::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, DType::BF16, q.device()).permute({0, 2, 1, 3});
  sage_attention_sm90(q, k, v, scale, out);
  return out;
}

double benchmark_attention_tflops(int64_t B, int64_t H, int64_t S, int64_t D, int iters) {
  VGEN_CHECK(has_backend(DeviceType::CUDA), "benchmark_attention_tflops: no CUDA backend ({})",
             backend_unavailable_reason(DeviceType::CUDA));
  VGEN_CHECK(B > 0 && H > 0 && S > 0 && D > 0 && iters > 0,
             "benchmark_attention_tflops: bad arguments B {} H {} S {} D {} iters {}", B, H, S, D, iters);
  const Device dev = Device::cuda(0);
  // Random BF16 [B, S, H, D] buffers (a block of noise tiled over them) seen as [B, H, S, D].
  auto make = [&](uint64_t seed) {
    const Tensor buf = Tensor::empty({B, S, H, D}, DType::BF16, dev);
    const Tensor flat = buf.view({-1});
    const int64_t n = flat.numel(), block = std::min<int64_t>(n, int64_t{1} << 20);
    const Tensor noise = randn({block}, seed).to(DType::BF16).to(dev);
    for (int64_t off = 0; off < n; off += block) {
      const int64_t len = std::min(block, n - off);
      flat.narrow(0, off, len).copy_(noise.narrow(0, 0, len));
    }
    return buf.permute({0, 2, 1, 3});
  };
  const Tensor q = make(1), k = make(2), v = make(3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int i = 0; i < 3; ++i) ops::attention(q, k, v, {}, scale);  // builds and caches the graph

  std::vector<cudaEvent_t> events(2 * static_cast<size_t>(iters));
  for (cudaEvent_t& e : events) check(cudaEventCreate(&e), "create a timing event");
  for (int i = 0; i < iters; ++i) {
    check(cudaEventRecord(events[2 * i], stream()), "record a timing event");
    ops::attention(q, k, v, {}, scale);
    check(cudaEventRecord(events[2 * i + 1], stream()), "record a timing event");
  }
  check(cudaStreamSynchronize(stream()), "synchronize after the benchmark");
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) check(cudaEventElapsedTime(&ms[i], events[2 * i], events[2 * i + 1]), "read a timer");
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  const double seconds = ms[iters / 2] * 1e-3;
  const double flops = 4.0 * static_cast<double>(B) * H * static_cast<double>(S) * S * D;
  return seconds > 0 ? flops / seconds / 1e12 : 0.0;
}

}  // namespace vgen::cuda
