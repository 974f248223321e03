// The `identity` decoder plugin.

#include <boost/json/parse.hpp>

#include "sdpo/core/decoder.h"
#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::Decoder> make_decoder(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::Decoder>(sdpo::ComponentConfig{
      "decoder", "identity", boost::json::parse(options_json).as_object(), "<test>", "decoder.options"});
}

TEST(IdentityDecoder, MapsRangeAndClamps) {
  auto d = make_decoder();
  at::Tensor latents = at::tensor({-1.0f, 1.0f, 0.0f, -3.0f, 5.0f, 0.5f}).view({1, 3, 1, 2});
  at::Tensor expected = at::tensor({0.0f, 1.0f, 0.5f, 0.0f, 1.0f, 0.75f}).view({1, 3, 1, 2});
  sdpo::test::expect_close(d->decode(latents), expected, 0, 1e-7);
  EXPECT_EQ(latents[0][0][0][0].item<float>(), -1.0f) << "the input must not be modified";
}

TEST(IdentityDecoder, RejectsWrongChannels) {
  auto d = make_decoder();
  EXPECT_THROW(d->decode(at::zeros({2, 4, 8, 8})), sdpo::Error);
  EXPECT_THROW(make_decoder(R"({"channels": 2})"), sdpo::ManifestError);
}

TEST(IdentityDecoder, GrayIsRepeatedToRgb) {
  auto d = make_decoder(R"({"channels": 1})");
  at::Tensor out = d->decode(at::full({2, 1, 4, 4}, 0.0f));
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{2, 3, 4, 4}));
  sdpo::test::expect_close(out, at::full({2, 3, 4, 4}, 0.5f), 0, 0);
}

}  // namespace
