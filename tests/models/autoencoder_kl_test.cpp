// AutoencoderKL against diffusers 0.42.1 on the tiny random FLUX-style VAE of
// tools/fixtures/make_flux_fixtures.py (16 latent channels, x8, mid-block attention, no quant
// convs). float32 on both sides: only summation order differs, so 1e-5 relative L2.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/autoencoder_kl/autoencoder_kl.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::fixture;
using vgen::testing::max_abs_diff;
using vgen::testing::reference;
using vgen::testing::rel_l2;

namespace {

void expect_close(const std::string& what, const Tensor& got, const Tensor& want, double tol = 1e-5) {
  const double rel = rel_l2(got, want);
  std::cout << "  " << what << ": rel L2 " << rel << ", max |diff| " << max_abs_diff(got, want) << "\n";
  EXPECT_LT(rel, tol) << what;
}

}  // namespace

TEST(AutoencoderKL, ConfigOfTheFluxVae) {
  const auto vae = AutoencoderKL::from_pretrained(fixture("flux_dev_tiny/vae"), DType::F32, Device::cpu());
  EXPECT_EQ(vae->config().latent_channels, 16);
  EXPECT_EQ(vae->config().scale_factor(), 8);
  EXPECT_DOUBLE_EQ(vae->config().scaling_factor, 0.3611);
  ASSERT_TRUE(vae->config().shift_factor.has_value());
  EXPECT_DOUBLE_EQ(*vae->config().shift_factor, 0.1159);
}

TEST(AutoencoderKL, EncodeMatchesDiffusers) {
  const auto vae = AutoencoderKL::from_pretrained(fixture("flux_dev_tiny/vae"), DType::F32, Device::cpu());
  const WeightStore ref = reference("flux_dev_tiny_ref/vae.safetensors");
  const AutoencoderKL::LatentDist dist = vae->encode(ref.get("image"));
  expect_close("latent mean", dist.mean, ref.get("latent_mean"));
  expect_close("latent logvar", dist.logvar, ref.get("latent_logvar"));
}

TEST(AutoencoderKL, DecodeMatchesDiffusers) {
  const auto vae = AutoencoderKL::from_pretrained(fixture("flux_dev_tiny/vae"), DType::F32, Device::cpu());
  const WeightStore ref = reference("flux_dev_tiny_ref/vae.safetensors");
  expect_close("decoded", vae->decode(ref.get("latents")), ref.get("decoded"));
}

TEST(AutoencoderKL, BadInputsNameTheCulprit) {
  const auto vae = AutoencoderKL::from_pretrained(fixture("flux_dev_tiny/vae"), DType::F32, Device::cpu());
  try {
    vae->encode(Tensor::zeros({1, 3, 20, 16}));
    FAIL() << "no error for a height that is not a multiple of 8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 8"), std::string::npos) << e.what();
  }
  try {
    vae->decode(Tensor::zeros({1, 4, 2, 2}));
    FAIL() << "no error for 4-channel latents";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16 channels"), std::string::npos) << e.what();
  }
}
