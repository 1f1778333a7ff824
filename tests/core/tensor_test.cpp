#include <gtest/gtest.h>

#include <filesystem>

#include "core/env.h"
#include "core/error.h"
#include "core/random.h"
#include "io/safetensors.h"
#include "ops/ops.h"

using namespace vgen;

TEST(Tensor, ViewsShareMemoryAndCopiesConvert) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.contiguous().to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(t.narrow(1, 1, 2).contiguous().to_vector(), (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(t.to(DType::BF16).to(DType::F32).to_vector(), t.to_vector());
  EXPECT_EQ(t.to(DType::F16).to(DType::F32).to_vector(), t.to_vector());
  EXPECT_THROW(t.view({4, 2}), Error);
  EXPECT_EQ(t.view({3, -1}).shape(), (Shape{3, 2}));
}

TEST(Tensor, UnflattenAndExpandAreViews) {
  // unflatten splits a dim whatever the strides: here the columns of a transposed [3, 4].
  const Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4}).transpose(0, 1);  // [4, 3]
  const Tensor u = t.unflatten(0, {2, 2});
  EXPECT_EQ(u.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(u.strides(), (Shape{2, 1, 4}));
  EXPECT_EQ(u.raw_data(), t.raw_data());
  EXPECT_EQ(u.contiguous().to_vector(), t.contiguous().to_vector());
  EXPECT_EQ(t.unflatten(-1, {3, 1}).shape(), (Shape{4, 3, 1}));
  EXPECT_THROW(t.unflatten(0, {3, 2}), Error);
  // expand repeats size-1 dims with stride 0 (as torch's expand).
  const Tensor col = Tensor::from_vector({1, 2}, {2, 1});
  const Tensor e = col.expand({2, 3});
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(e.raw_data(), col.raw_data());
  EXPECT_FALSE(e.is_contiguous());
  EXPECT_EQ(e.contiguous().to_vector(), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  Tensor dst = Tensor::zeros({3, 2});
  dst.copy_(e.transpose(0, 1));  // a copy reads a stride-0 source like any other
  EXPECT_EQ(dst.to_vector(), (std::vector<float>{1, 2, 1, 2, 1, 2}));
  EXPECT_THROW(col.expand({4, 3}), Error);
  EXPECT_THROW(col.expand({2, 1, 3}), Error);
}

TEST(Tensor, AsStridedViewsAnyStridesInsideTheStorage) {
  // The diagonal of a [3, 4] (stride 5) and a window sliding over it, relative to a narrowed view.
  const Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  EXPECT_EQ(t.as_strided({3}, {5}).contiguous().to_vector(), (std::vector<float>{0, 5, 10}));
  const Tensor row1 = t.narrow(0, 1, 2);  // starts at element 4
  EXPECT_EQ(row1.as_strided({2, 2}, {5, 1}, 1).contiguous().to_vector(), (std::vector<float>{5, 6, 10, 11}));
  EXPECT_EQ(row1.as_strided({2, 2}, {5, 1}, 1).raw_data(), t.narrow(1, 1, 1).narrow(0, 1, 1).raw_data());
  EXPECT_EQ(t.as_strided({0, 7}, {100, 100}).numel(), 0);  // empty: nothing read
  EXPECT_THROW(t.as_strided({2, 2}, {5, 2}, 6), Error);   // element 6 + 5 + 2 = 13: past the end
  EXPECT_THROW(t.as_strided({2}, {-1}, 3), Error);
  EXPECT_THROW(t.as_strided({2}, {1}, -1), Error);
  EXPECT_THROW(t.as_strided({2, 2}, {1}), Error);
}

TEST(Tensor, ChannelsLast3dLayoutIsKeptByClonesAndCat) {
  const Tensor x = randn({2, 3, 4, 5, 6}, 21);
  const Tensor cl = x.to_channels_last_3d();
  EXPECT_TRUE(cl.is_channels_last_3d());
  EXPECT_FALSE(x.is_channels_last_3d());
  EXPECT_EQ(cl.shape(), x.shape());
  EXPECT_EQ(cl.strides(), (Shape{360, 1, 90, 18, 3}));  // memory [N, D, H, W, C]
  EXPECT_EQ(cl.to_vector(), x.to_vector());
  EXPECT_EQ(cl.to_channels_last_3d().raw_data(), cl.raw_data());  // already so: no copy
  // A 1x1x1 filter is both contiguous and channels-last: no copy either.
  const Tensor w = randn({4, 3, 1, 1, 1}, 22);
  EXPECT_EQ(w.to_channels_last_3d().raw_data(), w.raw_data());
  // Clones keep the layout; contiguous() gives NCDHW.
  EXPECT_TRUE(cl.clone().is_channels_last_3d());
  EXPECT_TRUE(cl.contiguous().is_contiguous());
  EXPECT_EQ(cl.contiguous().to_vector(), x.to_vector());
  // A slice in time of a batch of 2 has gaps: it prefers channels-last, its clone is dense.
  const Tensor slice = cl.narrow(2, 1, 2);
  EXPECT_FALSE(slice.is_channels_last_3d());
  EXPECT_TRUE(slice.prefers_channels_last_3d());
  EXPECT_TRUE(slice.clone().is_channels_last_3d());
  EXPECT_EQ(slice.clone().to_vector(), x.narrow(2, 1, 2).contiguous().to_vector());
  // cat is channels-last when a piece is, with the same values.
  const Tensor c = ops::cat({x.narrow(2, 0, 1), cl.narrow(2, 1, 3)}, 2);
  EXPECT_TRUE(c.is_channels_last_3d());
  EXPECT_EQ(c.to_vector(), x.to_vector());
  EXPECT_FALSE(ops::cat({x, x}, 2).is_channels_last_3d());
  // Other ranks and permutations are not channels-last.
  EXPECT_FALSE(randn({3, 4, 5}, 23).transpose(0, 2).prefers_channels_last_3d());
  EXPECT_FALSE(x.permute({0, 2, 1, 3, 4}).prefers_channels_last_3d());
  EXPECT_THROW(Tensor::empty_channels_last_3d({2, 3, 4}, DType::F32, Device::cpu()), Error);
}

TEST(Env, FlagIsOneOrZeroElseTheFallback) {
  const char* name = "VGEN_TEST_ENV_FLAG";
  unsetenv(name);
  EXPECT_TRUE(env_flag(name, true));
  EXPECT_FALSE(env_flag(name, false));
  setenv(name, "1", 1);
  EXPECT_TRUE(env_flag(name, false));
  setenv(name, "0", 1);
  EXPECT_FALSE(env_flag(name, true));
  setenv(name, "yes", 1);
  EXPECT_TRUE(env_flag(name, true));
  EXPECT_FALSE(env_flag(name, false));
  unsetenv(name);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (down).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(f16_to_float(float_to_f16(0.333251953125f)), 0.333251953125f);
  EXPECT_EQ(f16_to_float(float_to_f16(65504.0f)), 65504.0f);
}

TEST(Random, SameSeedSameNoiseIndependentOfShape) {
  Tensor a = randn({2, 8}, 42);
  Tensor b = randn({16}, 42);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  Tensor c = randn({16}, 43);
  EXPECT_NE(a.to_vector(), c.to_vector());
  std::vector<float> v = randn({100000}, 7).to_vector();
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= v.size();
  for (float x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(var, 1.0, 0.02);
}

TEST(Safetensors, RoundTripAndErrors) {
  const std::string dir = ::testing::TempDir() + "/st_roundtrip";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/model.safetensors";
  save_safetensors(path, {{"a", Tensor::from_vector({1, 2, 3, 4}, {2, 2})},
                          {"b", Tensor::from_vector({5, 6}, {2}).to(DType::BF16)}});
  WeightStore store = WeightStore::open_dir(dir);
  EXPECT_EQ(store.get("a").to_vector(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(store.get("b").dtype(), DType::BF16);
  EXPECT_EQ(store.load("b", {2}, DType::F32, Device::cpu()).to_vector(), (std::vector<float>{5, 6}));
  try {
    store.load("a", {4}, DType::F32, Device::cpu());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a' has shape [2, 2]"), std::string::npos) << e.what();
  }
  try {
    store.get("missing.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'missing.weight'"), std::string::npos) << e.what();
  }
  // Truncate the file: the loader must name the tensor whose data is cut off.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  try {
    SafetensorsFile f(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(Ops, BroadcastAndLinear) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector({10, 20, 30}, {3});
  EXPECT_EQ(ops::add(a, b).to_vector(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  Tensor w = Tensor::from_vector({1, 0, 0, 0, 1, 1}, {2, 3});
  Tensor bias = Tensor::from_vector({0.5f, -0.5f}, {2});
  EXPECT_EQ(ops::linear(a, w, bias).to_vector(), (std::vector<float>{1.5f, 4.5f, 4.5f, 10.5f}));
  EXPECT_EQ(ops::cat({a, a}, 1).shape(), (Shape{2, 6}));
}
