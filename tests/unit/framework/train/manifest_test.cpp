#include "sdpo/train/manifest.h"

#include <boost/json.hpp>
#include <fstream>

#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/sampler.h"
#include "support/test_support.h"

namespace {

std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    sdpo::Manifest::parse(text, "m.json", sets);
  } catch (const sdpo::ManifestError& e) {
    return e.what();
  }
  return "";
}

TEST(Manifest, ParsesSectionsAndDefaults) {
  auto m = sdpo::Manifest::parse(
      R"({"name": "x", "sampler": {"name": "ddim", "options": {"eta": 0.5}},
                                     "train": {"epochs": 3, "learning_rate": 0.001}, "sample": {"steps": 8}})",
      "m.json");
  EXPECT_EQ(m.name, "x");
  EXPECT_EQ(m.sampler.name, "ddim");
  EXPECT_EQ(m.sampler.json_path, "sampler.options");
  EXPECT_EQ(m.train.epochs, 3);
  EXPECT_DOUBLE_EQ(m.train.optimizer.learning_rate, 0.001);
  EXPECT_EQ(m.sample.steps, 8);
  EXPECT_EQ(m.eval.steps, (std::vector<int64_t>{1, 2, 4, 8, 16, 50}));
}

TEST(Manifest, UnknownKeyNamesFileAndPath) {
  auto e = error_of(R"({"train": {"epochz": 3}})");
  EXPECT_NE(e.find("m.json: train.epochz"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown"), std::string::npos) << e;
  EXPECT_NE(error_of(R"({"trian": {}})").find("m.json: trian: unknown key"), std::string::npos);
}

TEST(Manifest, WrongTypeAndOutOfRange) {
  auto e = error_of(R"({"train": {"epochs": "ten"}})");
  EXPECT_NE(e.find("train.epochs"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
  e = error_of(R"({"train": {"learning_rate": -1}})");
  EXPECT_NE(e.find("train.learning_rate"), std::string::npos) << e;
  EXPECT_NE(e.find("expected a number in [0, 10]"), std::string::npos) << e;
  e = error_of(R"({"eval": {"steps": [1, 0]}})");
  EXPECT_NE(e.find("eval.steps"), std::string::npos) << e;
  e = error_of(R"({"model": {"name": 3}})");
  EXPECT_NE(e.find("model.name"), std::string::npos) << e;
}

TEST(Manifest, InvalidJsonNamesLine) {
  auto e = error_of("{\n\"train\": {,}\n}");
  EXPECT_NE(e.find("m.json"), std::string::npos) << e;
}

TEST(Manifest, SetOverridesCreatePaths) {
  auto m = sdpo::Manifest::parse(
      R"({"train": {"epochs": 3}})", "m.json", {"train.epochs=5", "sampler.name=ddim", "sampler.options.eta=0.25"});
  EXPECT_EQ(m.train.epochs, 5);
  EXPECT_EQ(m.sampler.name, "ddim");
  EXPECT_DOUBLE_EQ(m.sampler.options.at("eta").as_double(), 0.25);
  EXPECT_NE(error_of("{}", {"train.epochs"}).find("--set expects"), std::string::npos);
}

TEST(Manifest, ComponentPathIsShorthandForItsPathOption) {
  auto m = sdpo::Manifest::parse(
      R"({"model": {"name": "sd_unet", "options": {"lora_rank": 4}}})", "m.json", {"model.path=/models/sd-turbo"});
  ASSERT_TRUE(m.model.options.contains("path"));
  EXPECT_EQ(m.model.options.at("path").as_string(), "/models/sd-turbo");
  EXPECT_EQ(m.model.options.at("lora_rank").as_int64(), 4);
  auto twice = error_of(R"({"model": {"name": "x", "path": "/a", "options": {"path": "/b"}}})");
  EXPECT_NE(twice.find("m.json: model.path: given twice"), std::string::npos) << twice;
  EXPECT_NE(
      error_of(R"({"model": {"name": "x", "path": 3}})").find("model.path: expected a folder path"), std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"name": "x", "paths": "/a"}})").find("model.paths: unknown key"), std::string::npos);
}

TEST(Manifest, RequiredOptionFailsWhenMissingButNotWhileDescribing) {
  sdpo::ComponentConfig cfg{"model", "x", boost::json::object{}, "m.json", "model.options"};
  sdpo::OptionReader describe(cfg, /*describing=*/true);
  EXPECT_EQ(describe.required_string("path", "model folder"), "");
  EXPECT_EQ(describe.docs().at(0).type, "string (required)");
  sdpo::OptionReader strict(cfg);
  try {
    strict.required_string("path", "model folder");
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("model.options.path: model 'x': required: model folder"), std::string::npos)
        << e.what();
  }
  cfg.options["path"] = "";
  sdpo::OptionReader empty(cfg);
  EXPECT_THROW(empty.required_string("path", "model folder"), sdpo::ManifestError);
}

TEST(Manifest, MissingFileIsFileError) {
  EXPECT_THROW(sdpo::Manifest::load("/nonexistent/manifest.json"), sdpo::FileError);
}

TEST(Manifest, ADirectoryIsNamedAsOne) {
  const auto dir = sdpo::test::temp_dir("manifest_dir");
  sdpo::test::expect_error_names([&] { sdpo::Manifest::load(dir); }, {dir, "is a directory, expected a JSON file"});
}

TEST(Manifest, AUtf8ByteOrderMarkIsSkipped) {
  const auto path = sdpo::test::temp_dir("manifest_bom") + "/bom.json";
  std::ofstream(path) << "\xEF\xBB\xBF{\"name\": \"bom\", \"train\": {\"epochs\": 7}}";
  EXPECT_EQ(sdpo::Manifest::load(path).train.epochs, 7);
}

TEST(Manifest, ARepeatedKeyIsRefusedNamingItsPath) {
  const auto dir = sdpo::test::temp_dir("manifest_dup");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  sdpo::test::expect_error_names(
      [&] { sdpo::Manifest::load(write("top.json", R"({"name": "a", "name": "b"})")); },
      {"top.json", ": name: the key appears twice"});
  sdpo::test::expect_error_names(
      [&] {
        sdpo::Manifest::load(write(
            "nested.json",
            R"({"train": {"learning_rate": 1e-4, /* a comment */ "epochs": 2, "learning_rate": 1e-3}})"));
      },
      {"nested.json", "train.learning_rate: the key appears twice"});
  sdpo::test::expect_error_names(
      [&] {
        sdpo::Manifest::load(write(
            "array.json", R"({"eval": {"steps": [1, 2]}, "rewards": [{"name": "x"}, {"name": "y", "name": "z"}]})"));
      },
      {"array.json", "rewards[1].name: the key appears twice"});
  // Equal keys in different objects are fine.
  EXPECT_NO_THROW(
      sdpo::Manifest::load(write("ok.json", R"({"model": {"name": "toy_unet"}, "sampler": {"name": "ddim"}})")));
}

TEST(Manifest, SetRefusesAnEmptyKeyInItsPath) {
  for (const char* set : {"train.epochs.=2", ".train.epochs=2", "train..epochs=2"}) {
    EXPECT_NE(error_of("{}", {set}).find("the JSON path has an empty key"), std::string::npos) << set;
  }
}

TEST(Manifest, UnknownPluginListsRegisteredNames) {
  auto m = sdpo::Manifest::parse(R"({"sampler": {"name": "dimm"}})", "m.json");
  try {
    sdpo::Registry::global().create<sdpo::Sampler>(m.sampler);
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("m.json: sampler.name"), std::string::npos) << w;
    EXPECT_NE(w.find("unknown sampler 'dimm'"), std::string::npos) << w;
    EXPECT_NE(w.find("ddim"), std::string::npos) << w;
  }
}

TEST(Manifest, ComponentOptionErrorsNameTheComponent) {
  auto m = sdpo::Manifest::parse(R"({"sampler": {"name": "ddim", "options": {"eta": 20, "etta": 1}}})", "m.json");
  try {
    sdpo::Registry::global().create<sdpo::Sampler>(m.sampler);
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    std::string w = e.what();
    EXPECT_NE(
        w.find("m.json: sampler.options.eta: sampler 'ddim': expected a number in [0, 10], got 20"), std::string::npos)
        << w;
  }
  m = sdpo::Manifest::parse(R"({"sampler": {"name": "ddim", "options": {"etta": 1}}})", "m.json");
  try {
    sdpo::Registry::global().create<sdpo::Sampler>(m.sampler);
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("sampler.options.etta"), std::string::npos) << w;
    EXPECT_NE(w.find("unknown option; known options: eta"), std::string::npos) << w;
  }
}

}  // namespace
