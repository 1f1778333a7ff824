// Tensor: a typed, strided view of reference-counted device memory.
//
// Views (reshape of contiguous data, permute, narrow, select) share storage; ops
// produce new contiguous tensors. Memory comes from the device's Allocator, or from
// a caller-owned buffer such as an mmap'ed safetensors file.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace vgen {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Storage {
 public:
  // Allocates nbytes on device through its allocator.
  Storage(size_t nbytes, Device device);
  // Wraps external memory; `keep_alive` owns it (e.g. an mmap).
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> keep_alive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Exchanges the memory (and its device and owner) of two storages of the same size: every
  // tensor viewing this storage then reads the other's bytes (moving weights between host and
  // device in place, e.g. an idle expert's).
  void swap_contents(Storage& other);

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  bool owned_ = false;
  std::shared_ptr<void> keep_alive_;
};

// Records the storages that tensors made on this thread get while it is alive (nested
// captures all record): what a model's loading allocated and kept is its set of weights.
class StorageCapture {
 public:
  StorageCapture();
  ~StorageCapture();
  StorageCapture(const StorageCapture&) = delete;
  StorageCapture& operator=(const StorageCapture&) = delete;
  // The recorded storages still referenced by some tensor, each once.
  std::vector<std::shared_ptr<Storage>> live() const;

 private:
  friend class Tensor;
  static void record(const std::shared_ptr<Storage>& storage);
  StorageCapture* outer_;
  std::vector<std::weak_ptr<Storage>> storages_;
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // A 5-D [N, C, D, H, W] tensor whose memory is laid out as [N, D, H, W, C].
  static Tensor empty_channels_last_3d(const Shape& shape, DType dtype, Device device);
  // `shape` in `like`'s memory format: channels-last 3-D when `like` prefers it and shape is 5-D,
  // else contiguous (PyTorch's preserve_format, for the one non-default format we use).
  static Tensor empty_like_format(const Tensor& like, const Shape& shape, DType dtype);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // zeros(shape) in `like`'s memory format (as empty_like_format).
  static Tensor zeros_like_format(const Tensor& like, const Shape& shape, DType dtype);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  // Copies float data into a new CPU F32 tensor.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape);
  // Wraps memory without copying; keep_alive must own it.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device,
                          std::shared_ptr<void> keep_alive);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  // The memory this tensor views (shared with its views).
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t element_size() const { return dtype_size(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  // 5-D [N, C, D, H, W] data laid out as [N, D, H, W, C] (PyTorch's channels_last_3d) and not
  // also contiguous: the layout the VAE's convolutions run in on a GPU. Size-1 dims are ignored.
  bool is_channels_last_3d() const;
  // Channels-last 3-D ordering of possibly gapped strides (a slice of such a tensor): what
  // results made from this tensor are laid out as (empty_like_format).
  bool prefers_channels_last_3d() const;

  void* raw_data() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw_data());
  }

  // Views. `view` needs contiguous data; one dimension may be -1.
  Tensor view(Shape shape) const;
  Tensor reshape(Shape shape) const;  // view when possible, else a contiguous copy
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim, int64_t end_dim) const;
  // Dimension `dim` split into `sizes` (whose product is its size), as torch's unflatten: a view
  // whatever the strides.
  Tensor unflatten(int64_t dim, const Shape& sizes) const;
  // Size-1 dimensions repeated to `shape` (same rank) without copying: stride 0, as torch's
  // expand. Its elements alias each other, so it is for reading (a copy's source), not writing.
  Tensor expand(const Shape& shape) const;
  // The elements at `offset` + sum(index[d] * strides[d]) from this tensor's first element, as
  // torch's as_strided but relative to this view: any (non-negative) strides, e.g. a diagonal
  // that no chain of the views above makes. Checked to stay inside the storage. Elements may
  // alias each other, so such a view is for reading unless its strides keep them apart.
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset = 0) const;

  // Copies.
  Tensor contiguous() const;
  Tensor clone() const;  // keeps a channels-last 3-D layout, else contiguous
  Tensor to_channels_last_3d() const;  // this tensor when already so laid out, else a copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  // Copies src (same shape; any dtype/strides/device) into this tensor's memory.
  void copy_(const Tensor& src);

  // Host-side helpers (copy to CPU F32 when needed).
  std::vector<float> to_vector() const;
  float item() const;
  std::string str() const;  // "F32[2, 3] cpu"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  Shape strides_;  // in elements
  DType dtype_ = DType::F32;

  friend class TensorAccess;
};

Shape contiguous_strides(const Shape& shape);
// Normalizes a possibly negative dimension index against rank; throws when out of range.
int64_t wrap_dim(int64_t dim, int64_t rank);

}  // namespace vgen
