// safetensors files: memory-mapped, validated on open, tensors served without copying.
// A component folder may hold one file or shards listed in `*.safetensors.index.json`.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgen {

struct TensorInfo {
  DType dtype;
  Shape shape;
  size_t begin = 0;  // byte offsets into the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the file: header size, JSON, dtypes, offsets within the data.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor viewing the mapped bytes (kept alive by the tensor).
  Tensor tensor(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;
  const char* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// All weights of one component (e.g. `transformer/`), single-file or sharded.
class WeightStore {
 public:
  // Finds `diffusion_pytorch_model*.safetensors` or `model*.safetensors` (sharded or not) in dir.
  static WeightStore open_dir(const std::string& dir);
  // Opens explicit files (tests, single-file checkpoints).
  static WeightStore open_files(const std::vector<std::string>& paths);

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const;
  const TensorInfo& info(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  // The stored tensor; throws "DIR: missing tensor 'NAME'" when absent.
  Tensor get(const std::string& name) const;
  // get() + shape check + conversion to dtype on device.
  Tensor load(const std::string& name, const Shape& expected_shape, DType dtype, Device device) const;
  // Names never fetched through get()/load(): reported as unexpected weights.
  std::vector<std::string> unused() const;
  const std::string& source() const { return source_; }
  size_t total_bytes() const;

 private:
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
  mutable std::set<std::string> used_;
};

// Writes tensors as a safetensors file (used by tests and tools).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors);

}  // namespace vgen
