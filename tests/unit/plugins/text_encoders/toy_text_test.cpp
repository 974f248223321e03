// The `toy_text` text encoder plugin, reached through the registry.

#include <boost/json/parse.hpp>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/core/text_encoder.h"
#include "support/test_support.h"

namespace {

std::shared_ptr<sdpo::TextEncoder> make_encoder(const std::string& options_json = "{}") {
  return sdpo::Registry::global().create<sdpo::TextEncoder>(sdpo::ComponentConfig{
      "text_encoder", "toy_text", boost::json::parse(options_json).as_object(), "<test>", "text_encoder.options"});
}

at::Tensor encode_one(sdpo::TextEncoder& e, const std::string& prompt) { return e.encode({prompt})[0]; }

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(ToyText, OutputShape) {
  auto e = make_encoder();
  at::Tensor out = e->encode({"a red circle", "two blue squares on the left", ""});
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{3, 12, 64}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  EXPECT_EQ(
      make_encoder(R"({"dim": 32, "max_words": 7, "layers": 2})")->encode({"a"}).sizes(),
      (std::vector<std::int64_t>{1, 7, 32}));
}

TEST(ToyText, SamePromptSameOutputAnyBatch) {
  auto e = make_encoder();
  at::Tensor batch = e->encode({"a red circle", "a blue square", "a red circle"});
  sdpo::test::expect_close(batch[0], batch[2], 0, 1e-6, "same batch");
  sdpo::test::expect_close(encode_one(*e, "a red circle"), batch[0], 0, 1e-6, "alone");
}

TEST(ToyText, DifferentPromptsDiffer) {
  auto e = make_encoder();
  const at::Tensor red = encode_one(*e, "a red circle");
  EXPECT_GT(max_diff(red, encode_one(*e, "a blue circle")), 1e-3);
  EXPECT_GT(max_diff(red, encode_one(*e, "a circle red")), 1e-3) << "word order must matter";
  EXPECT_GT(max_diff(red, encode_one(*e, "")), 1e-3);
}

TEST(ToyText, UnknownWordsMapToOneToken) {
  auto e = make_encoder();
  at::Tensor blob;
  EXPECT_NO_THROW(blob = encode_one(*e, "a red blob"));
  sdpo::test::expect_close(encode_one(*e, "a red zebra"), blob, 0, 1e-6, "both <unk>");
  EXPECT_GT(max_diff(blob, encode_one(*e, "a red circle")), 1e-3);
}

TEST(ToyText, CaseAndPunctuationIgnored) {
  auto e = make_encoder();
  sdpo::test::expect_close(encode_one(*e, "  A Red,circle. "), encode_one(*e, "a red circle"), 0, 1e-6);
}

TEST(ToyText, LongPromptsAreCut) {
  auto e = make_encoder(R"({"max_words": 4})");
  sdpo::test::expect_close(
      encode_one(*e, "a red circle and a blue square"), encode_one(*e, "a red circle and"), 0, 1e-6);
}

TEST(ToyText, SaveLoadGivesIdenticalOutputs) {
  auto trained = make_encoder(R"({"seed": 1})");
  const std::string path = sdpo::test::temp_dir("toy_text") + "/text.safetensors";
  sdpo::safetensors_save(path, trained->state_dict());
  auto fresh = make_encoder(R"({"seed": 2, "checkpoint": ")" + path + R"("})");
  const std::vector<std::string> prompts{"a red circle", "three white triangles at the top"};
  sdpo::test::expect_close(fresh->encode(prompts), trained->encode(prompts), 0, 0);
  EXPECT_GT(max_diff(make_encoder(R"({"seed": 2})")->encode(prompts), trained->encode(prompts)), 1e-3);
}

TEST(ToyText, StrictLoadRejectsMissingKeyAndWrongShape) {
  auto e = make_encoder();
  sdpo::TensorMap weights = make_encoder(R"({"seed": 4})")->state_dict();
  ASSERT_TRUE(weights.count("layers.0.qkv.weight"));
  sdpo::TensorMap missing = weights;
  missing.erase("layers.0.qkv.weight");
  try {
    e->load_state_dict(missing, true, "text.safetensors");
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const sdpo::Error& err) {
    EXPECT_NE(std::string(err.what()).find("layers.0.qkv.weight"), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("text.safetensors"), std::string::npos) << err.what();
  }
  // A checkpoint written with another max_words has another position table.
  sdpo::TensorMap other = make_encoder(R"({"max_words": 7})")->state_dict();
  try {
    e->load_state_dict(other, true, "other.safetensors");
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const sdpo::Error& err) {
    EXPECT_NE(std::string(err.what()).find("position_embedding"), std::string::npos) << err.what();
  }
}

TEST(ToyText, VocabularyOptionValidated) {
  EXPECT_THROW(make_encoder(R"({"vocabulary": "red Red"})"), sdpo::ManifestError);
  EXPECT_THROW(make_encoder(R"({"vocabulary": "red red"})"), sdpo::ManifestError);
  EXPECT_THROW(make_encoder(R"({"vocabulary": "  "})"), sdpo::ManifestError);
  EXPECT_THROW(make_encoder(R"({"dim": 30, "heads": 4})"), sdpo::ManifestError);
  auto small = make_encoder(R"({"vocabulary": "red blue"})");
  sdpo::test::expect_close(
      encode_one(*small, "red circle"), encode_one(*small, "red square"), 0, 1e-6,
      "circle and square are both unknown here");
}

}  // namespace
