#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/json.h"

namespace fs = std::filesystem;

namespace vgen {

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat ({})", path, std::strerror(errno));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: truncated safetensors file ({} bytes, no header)", path, size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail("{}: mmap failed ({})", path, std::strerror(errno));
  mapping_ = std::shared_ptr<void>(map, [size](void* p) { ::munmap(p, size); });
  const char* bytes = static_cast<const char*>(map);

  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes, 8);  // little-endian, as the format says
  if (header_size > size - 8) fail("{}: corrupted safetensors header (header size {} exceeds file size {})", path, header_size, size);
  Json header;
  try {
    header = Json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const Json::parse_error& e) {
    fail("{}: corrupted safetensors header (malformed JSON: {})", path, e.what());
  }
  if (!header.is_object()) fail("{}: corrupted safetensors header (not a JSON object)", path);
  data_ = bytes + 8 + header_size;
  const size_t data_size = size - 8 - header_size;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object())
        for (const auto& [k, v] : entry.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", path, name);
    if (!entry.is_object()) fail("{}: header entry is not an object", where);
    TensorInfo info;
    const std::string dtype = json_require<std::string>(entry, "dtype", where);
    if (!parse_dtype(dtype, &info.dtype)) fail("{}: unsupported dtype '{}'", where, dtype);
    info.shape = json_require<Shape>(entry, "shape", where);
    for (int64_t d : info.shape)
      if (d < 0) fail("{}: negative dimension in shape {}", where, shape_str(info.shape));
    const auto offsets = json_require<std::vector<uint64_t>>(entry, "data_offsets", where);
    if (offsets.size() != 2 || offsets[0] > offsets[1]) fail("{}: malformed data_offsets", where);
    info.begin = offsets[0];
    info.end = offsets[1];
    if (info.end > data_size)
      fail("{}: data [{}, {}) runs past the end of the file (data section is {} bytes; truncated file?)", where,
           info.begin, info.end, data_size);
    const size_t expected = static_cast<size_t>(shape_numel(info.shape)) * dtype_size(info.dtype);
    if (info.end - info.begin != expected)
      fail("{}: holds {} bytes but {} {} needs {}", where, info.end - info.begin, dtype, shape_str(info.shape), expected);
    infos_[name] = info;
  }
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) fail("{}: missing tensor '{}'", path_, name);
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : infos_) out.push_back(n);
  return out;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& i = info(name);
  return Tensor::from_blob(const_cast<char*>(data_ + i.begin), i.shape, i.dtype, Device::cpu(), mapping_);
}

WeightStore WeightStore::open_files(const std::vector<std::string>& paths) {
  WeightStore store;
  store.source_ = paths.empty() ? "" : paths.front();
  for (const std::string& p : paths) {
    store.files_.push_back(std::make_shared<SafetensorsFile>(p));
    for (const std::string& n : store.files_.back()->names()) store.where_[n] = store.files_.size() - 1;
  }
  return store;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) fail("{}: component folder not found", dir);
  for (const char* stem : {"diffusion_pytorch_model", "model"}) {
    const fs::path index = fs::path(dir) / (std::string(stem) + ".safetensors.index.json");
    if (fs::exists(index)) {
      const Json j = read_json_file(index.string());
      if (!j.contains("weight_map") || !j["weight_map"].is_object())
        fail("{}: missing or malformed 'weight_map'", index.string());
      WeightStore store;
      store.source_ = dir;
      std::map<std::string, size_t> file_index;
      for (const auto& [name, file] : j["weight_map"].items()) {
        if (!file.is_string()) fail("{}: weight_map entry '{}' is not a file name", index.string(), name);
        const std::string f = file.get<std::string>();
        if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
          fail("{}: weight_map entry '{}' names a file outside the folder ({})", index.string(), name, f);
        if (!file_index.count(f)) {
          const fs::path shard = fs::path(dir) / f;
          if (!fs::exists(shard)) fail("{}: shard {} listed in the index is missing", dir, f);
          store.files_.push_back(std::make_shared<SafetensorsFile>(shard.string()));
          file_index[f] = store.files_.size() - 1;
        }
        const size_t idx = file_index[f];
        if (!store.files_[idx]->contains(name))
          fail("{}: missing tensor '{}' (the index says it is in this shard)", store.files_[idx]->path(), name);
        store.where_[name] = idx;
      }
      return store;
    }
    const fs::path single = fs::path(dir) / (std::string(stem) + ".safetensors");
    if (fs::exists(single)) {
      WeightStore store = open_files({single.string()});
      store.source_ = dir;
      return store;
    }
  }
  fail("{}: no safetensors weights (diffusion_pytorch_model.safetensors, model.safetensors or a sharded index)", dir);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

const TensorInfo& WeightStore::info(const std::string& name) const { return files_[where_.at(name)]->info(name); }

const std::string& WeightStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: missing tensor '{}'", source_, name);
  return files_[it->second]->path();
}

Tensor WeightStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: missing tensor '{}'", source_, name);
  used_.insert(name);
  return files_[it->second]->tensor(name);
}

Tensor WeightStore::load(const std::string& name, const Shape& expected_shape, DType dtype, Device device) const {
  Tensor t = get(name);
  if (t.shape() != expected_shape)
    fail("{}: tensor '{}' has shape {}, expected {} from the config", file_of(name), name, shape_str(t.shape()),
         shape_str(expected_shape));
  if (!is_floating(t.dtype())) fail("{}: tensor '{}' has non-float dtype {}", file_of(name), name, dtype_name(t.dtype()));
  Tensor out = t.to(dtype);
  if (out.device() != device) return out.to(device);
  // A same-dtype CPU tensor still views the mapping; copy so memory is ours and resident.
  return out.raw_data() == t.raw_data() ? out.clone() : out;
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_)
    if (!used_.count(n)) out.push_back(n);
  return out;
}

size_t WeightStore::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, idx] : where_) {
    const TensorInfo& i = files_[idx]->info(name);
    n += i.end - i.begin;
  }
  return n;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
  Json header = Json::object();
  size_t offset = 0;
  std::vector<Tensor> ordered;
  for (const auto& [name, t] : tensors) {
    Tensor c = t.to(Device::cpu()).contiguous();
    header[name] = {{"dtype", std::string(dtype_name(c.dtype()))}, {"shape", c.shape()}, {"data_offsets", {offset, offset + c.nbytes()}}};
    offset += c.nbytes();
    ordered.push_back(c);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) fail("{}: cannot write", tmp);
    const uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : ordered) out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
    if (!out) fail("{}: write failed", tmp);
  }
  fs::rename(tmp, path);
}

}  // namespace vgen
