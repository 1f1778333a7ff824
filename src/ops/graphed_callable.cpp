#include "ops/graphed_callable.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "ops/ops.h"

namespace vgen {
namespace {

// Everything that selects a recording: the params and each input's dtype, device and shape.
std::vector<int64_t> layout_key(const std::vector<Tensor>& inputs, const std::vector<int64_t>& params) {
  std::vector<int64_t> key(params);
  key.push_back(static_cast<int64_t>(inputs.size()));
  for (const Tensor& t : inputs) {
    key.push_back(t.defined() ? static_cast<int64_t>(t.dtype()) : -1);
    if (!t.defined()) continue;
    key.push_back(static_cast<int64_t>(t.device().type));
    key.push_back(t.device().index);
    key.push_back(t.dim());
    key.insert(key.end(), t.shape().begin(), t.shape().end());
  }
  return key;
}

void copy_inputs(std::vector<Tensor>& into, const std::vector<Tensor>& from) {
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i].defined()) into[i].copy_(from[i]);
}

}  // namespace

GraphedCallable::GraphedCallable(std::string what, Fn fn, size_t max_graphs)
    : what_(std::move(what)), fn_(std::move(fn)), max_graphs_(std::max<size_t>(max_graphs, 1)) {}

GraphedCallable::~GraphedCallable() = default;

void GraphedCallable::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
}

void GraphedCallable::set_enabled(bool enabled) {
  std::lock_guard<std::mutex> lock(mutex_);
  enabled_ = enabled;
  if (!enabled) entries_.clear();
}

GraphedCallable::Entry* GraphedCallable::find(const std::vector<int64_t>& key) {
  for (auto& e : entries_)
    if (e->key == key) return e.get();
  return nullptr;
}

GraphedCallable::Entry& GraphedCallable::add(std::vector<int64_t> key, const std::vector<Tensor>& inputs) {
  if (entries_.size() >= max_graphs_) {
    auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                   [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    entries_.erase(oldest);
  }
  auto e = std::make_unique<Entry>();
  e->key = std::move(key);
  for (const Tensor& t : inputs)
    e->inputs.push_back(t.defined() ? Tensor::empty(t.shape(), t.dtype(), t.device()) : Tensor());
  entries_.push_back(std::move(e));
  return *entries_.back();
}

Tensor GraphedCallable::operator()(const std::vector<Tensor>& inputs, const std::vector<int64_t>& params) {
  const auto first = std::find_if(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.defined(); });
  if (first == inputs.end() || first->device().is_cpu()) return fn_(inputs, params);
  const Device device = first->device();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!enabled_ || failed_) return fn_(inputs, params);

  std::vector<int64_t> key = layout_key(inputs, params);
  Entry* e = find(key);
  if (e == nullptr) {
    // First sight of these layouts: run eagerly on the static buffers (lazy set-up happens
    // now, with the very layouts the recording will see).
    Entry& fresh = add(std::move(key), inputs);
    fresh.last_use = ++clock_;
    try {
      copy_inputs(fresh.inputs, inputs);
      Tensor out = fn_(fresh.inputs, params);
      fresh.output = Tensor::empty(out.shape(), out.dtype(), out.device());
      return out;
    } catch (...) {
      // A failing call (bad inputs, cancellation) leaves nothing behind to record later.
      entries_.pop_back();
      throw;
    }
  }
  e->last_use = ++clock_;
  copy_inputs(e->inputs, inputs);
  if (!e->graph) {
    try {
      e->graph = ops::capture(device, [&] { e->output.copy_(fn_(e->inputs, params)); });
      ++captures_;
      spdlog::debug("{}: recorded a CUDA graph for {}", what_, shape_str(e->output.shape()));
    } catch (const Error& err) {
      spdlog::warn("{}: running without CUDA graphs: {}", what_, err.what());
      failed_ = true;
      entries_.clear();
      return fn_(inputs, params);
    }
  }
  e->graph->replay();
  ++replays_;
  return e->output.clone();
}

}  // namespace vgen
