#include "core/tensor.h"

#include <algorithm>
#include <numeric>
#include <unordered_set>

#include "core/allocator.h"
#include "core/error.h"
#include "core/execution_context.h"

namespace vgen {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t rank) {
  const int64_t d = dim < 0 ? dim + rank : dim;
  if (d < 0 || d >= rank) fail("dimension {} out of range for a tensor of rank {}", dim, rank);
  return d;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device), owned_(true) {
  data_ = allocator_for(device).allocate(nbytes);
}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> keep_alive)
    : data_(data), nbytes_(nbytes), device_(device), keep_alive_(std::move(keep_alive)) {}

Storage::~Storage() {
  if (owned_ && data_ != nullptr) allocator_for(device_).deallocate(data_, nbytes_);
}

void Storage::swap_contents(Storage& other) {
  VGEN_CHECK(nbytes_ == other.nbytes_, "Storage::swap_contents: {} bytes vs {}", nbytes_, other.nbytes_);
  std::swap(data_, other.data_);
  std::swap(device_, other.device_);
  std::swap(owned_, other.owned_);
  std::swap(keep_alive_, other.keep_alive_);
}

namespace {
thread_local StorageCapture* current_capture = nullptr;
}

StorageCapture::StorageCapture() : outer_(current_capture) { current_capture = this; }
StorageCapture::~StorageCapture() { current_capture = outer_; }

void StorageCapture::record(const std::shared_ptr<Storage>& storage) {
  for (StorageCapture* c = current_capture; c != nullptr; c = c->outer_) c->storages_.push_back(storage);
}

std::vector<std::shared_ptr<Storage>> StorageCapture::live() const {
  std::vector<std::shared_ptr<Storage>> out;
  std::unordered_set<const Storage*> seen;
  for (const std::weak_ptr<Storage>& w : storages_) {
    std::shared_ptr<Storage> s = w.lock();
    if (s && seen.insert(s.get()).second) out.push_back(std::move(s));
  }
  return out;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) VGEN_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  if (current_capture) StorageCapture::record(t.storage_);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::empty_channels_last_3d(const Shape& shape, DType dtype, Device device) {
  VGEN_CHECK(shape.size() == 5, "channels-last 3-D tensor of shape {}: needs 5 dims", shape_str(shape));
  return empty({shape[0], shape[2], shape[3], shape[4], shape[1]}, dtype, device).permute({0, 4, 1, 2, 3});
}

Tensor Tensor::empty_like_format(const Tensor& like, const Shape& shape, DType dtype) {
  if (shape.size() == 5 && like.prefers_channels_last_3d()) return empty_channels_last_3d(shape, dtype, like.device());
  return empty(shape, dtype, like.device());
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0f, dtype, device); }

Tensor Tensor::zeros_like_format(const Tensor& like, const Shape& shape, DType dtype) {
  if (shape.size() != 5 || !like.prefers_channels_last_3d()) return zeros(shape, dtype, like.device());
  // Zeroed in its dense [N, D, H, W, C] order, then viewed as [N, C, D, H, W] (empty_channels_last_3d).
  return zeros({shape[0], shape[2], shape[3], shape[4], shape[1]}, dtype, like.device()).permute({0, 4, 1, 2, 3});
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  ExecutionContext::current().runtime(device).fill(t, value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  VGEN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
             "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data<float>());
  return t;
}

Tensor Tensor::from_vector_i64(const std::vector<int64_t>& values, const Shape& shape) {
  VGEN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
             "from_vector_i64: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::I64);
  std::copy(values.begin(), values.end(), t.data<int64_t>());
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device,
                         std::shared_ptr<void> keep_alive) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>(data, static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype),
                                         device, std::move(keep_alive));
  if (current_capture) StorageCapture::record(t.storage_);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim())]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

namespace {
// Whether 5-D data is laid out densely as [N, D, H, W, C] (size-1 dims ignored).
bool channels_last_dense(const Shape& shape, const Shape& strides) {
  if (shape.size() != 5) return false;
  int64_t expected = 1;
  for (int64_t d : {1, 4, 3, 2, 0}) {
    if (shape[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}
}  // namespace

bool Tensor::is_channels_last_3d() const { return !is_contiguous() && channels_last_dense(shape_, strides_); }

bool Tensor::prefers_channels_last_3d() const {
  if (dim() != 5 || is_contiguous()) return false;
  int64_t last = 0;  // strides grow from C through W, H, D to N (size-1 dims ignored)
  for (int64_t d : {1, 4, 3, 2, 0}) {
    if (shape_[d] == 1) continue;
    if (strides_[d] < last || (last == 0 && strides_[d] != 1)) return false;
    last = std::max<int64_t>(strides_[d] * shape_[d], 1);
  }
  return true;
}

void* Tensor::raw_data() const {
  VGEN_CHECK(defined(), "use of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(element_size());
}

Tensor Tensor::view(Shape shape) const {
  VGEN_CHECK(is_contiguous(), "view {} of a non-contiguous tensor {}", shape_str(shape), str());
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      VGEN_CHECK(infer < 0, "view {}: more than one -1", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    VGEN_CHECK(known > 0 && numel() % known == 0, "cannot view {} as {}", str(), shape_str(shape));
    shape[infer] = numel() / known;
  }
  VGEN_CHECK(shape_numel(shape) == numel(), "cannot view {} as {}", str(), shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  return t;
}

Tensor Tensor::reshape(Shape shape) const { return is_contiguous() ? view(std::move(shape)) : contiguous().view(std::move(shape)); }

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  VGEN_CHECK(static_cast<int64_t>(order.size()) == dim(), "permute of {} needs {} dims", str(), dim());
  Tensor t = *this;
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t d = wrap_dim(order[i], dim());
    VGEN_CHECK(!seen[d], "permute: dimension {} repeated", d);
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> order(dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[wrap_dim(a, dim())], order[wrap_dim(b, dim())]);
  return permute(order);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim());
  VGEN_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d],
             "narrow({}, {}, {}) out of range for {}", d, start, length, str());
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = length;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim());
  if (index < 0) index += shape_[d];
  Tensor t = narrow(d, index, 1);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1);
  Tensor t = *this;
  const int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim());
  VGEN_CHECK(shape_[d] == 1, "squeeze({}) of {}: size is not 1", d, str());
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  start_dim = wrap_dim(start_dim, dim());
  end_dim = wrap_dim(end_dim, dim());
  Shape s(shape_.begin(), shape_.begin() + start_dim);
  int64_t n = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) n *= shape_[i];
  s.push_back(n);
  s.insert(s.end(), shape_.begin() + end_dim + 1, shape_.end());
  return reshape(s);
}

Tensor Tensor::unflatten(int64_t d, const Shape& sizes) const {
  d = wrap_dim(d, dim());
  VGEN_CHECK(!sizes.empty() && shape_numel(sizes) == shape_[d], "unflatten({}, {}) of {}", d, shape_str(sizes), str());
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  int64_t stride = strides_[d];
  for (size_t i = sizes.size(); i-- > 0;) {
    t.shape_.insert(t.shape_.begin() + d, sizes[i]);
    t.strides_.insert(t.strides_.begin() + d, stride);
    stride *= sizes[i];
  }
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  VGEN_CHECK(shape.size() == shape_.size(), "expand of {} to {}: the ranks differ", str(), shape_str(shape));
  Tensor t = *this;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == shape_[d]) continue;
    VGEN_CHECK(shape_[d] == 1 && shape[d] >= 0, "expand of {} to {}: dimension {} is not 1", str(), shape_str(shape), d);
    t.shape_[d] = shape[d];
    t.strides_[d] = 0;
  }
  return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  VGEN_CHECK(defined(), "as_strided of an undefined tensor");
  VGEN_CHECK(shape.size() == strides.size(), "as_strided of {}: {} sizes and {} strides", str(), shape.size(),
             strides.size());
  int64_t last = offset_ + offset;  // the furthest element read, in the storage
  bool empty = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    VGEN_CHECK(shape[d] >= 0 && strides[d] >= 0, "as_strided of {}: size {} stride {} in dim {}", str(), shape[d],
               strides[d], d);
    empty = empty || shape[d] == 0;
    if (shape[d] > 0) last += (shape[d] - 1) * strides[d];
  }
  const int64_t elements = static_cast<int64_t>(storage_->nbytes() / element_size());
  VGEN_CHECK(offset_ + offset >= 0 && (empty || last < elements),
             "as_strided of {}: sizes {} strides {} offset {} leave its storage of {} elements", str(),
             shape_str(shape), shape_str(strides), offset, elements);
  Tensor t = *this;
  t.offset_ += offset;
  t.shape_ = shape;
  t.strides_ = strides;
  return t;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor t = empty(shape_, dtype_, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty_like_format(*this, shape_, dtype_);
  t.copy_(*this);
  return t;
}

Tensor Tensor::to_channels_last_3d() const {
  if (channels_last_dense(shape_, strides_)) return *this;
  Tensor t = empty_channels_last_3d(shape_, dtype_, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_(*this);
  return t;
}

void Tensor::copy_(const Tensor& src) {
  VGEN_CHECK(shape_ == src.shape_, "copy_: shape {} into {}", shape_str(src.shape_), shape_str(shape_));
  // The non-CPU side owns the copy (it knows how to reach host memory).
  const Device d = device().is_cpu() ? src.device() : device();
  ExecutionContext::current().runtime(d).copy(*this, src);
}

std::vector<float> Tensor::to_vector() const {
  Tensor t = to(Device::cpu()).to(DType::F32).contiguous();
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

float Tensor::item() const {
  VGEN_CHECK(numel() == 1, "item() of {} with {} elements", str(), numel());
  return to_vector()[0];
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " " + device().str();
}

}  // namespace vgen
