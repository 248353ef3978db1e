#include "apps/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

namespace fedrec {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("FEDREC_TEST_TMPDIR");
  std::string base = dir ? dir : ::testing::TempDir();
  std::filesystem::create_directories(base);
  const std::string path = base + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(Config, FileOverridesDefaultsAndKeepsTheRest) {
  const std::string path = WriteFile("good.toml",
                                     "seed = 5\n[train]\nlr = 0.02\n[federation]\nsites = 3\n"
                                     "[data.synthetic]\nusers = 50\n");
  Result<Config> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->seed, 5u);
  EXPECT_DOUBLE_EQ(config->train.lr, 0.02);
  EXPECT_EQ(config->federation.sites, 3);
  EXPECT_EQ(config->data.synthetic.users, 50);
  EXPECT_EQ(config->federation.rounds, Config().federation.rounds);
}

TEST(Config, ModelKeysFromFileAndOverridesReachTheParams) {
  const std::string path =
      WriteFile("ials.toml", "[model]\nname = \"ials\"\n[model.ials]\nreg = 0.2\n");
  Result<Config> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->model.name, "ials");
  ASSERT_TRUE(ApplyOverride(&*config, "model.ials.iterations=5").ok());
  EXPECT_EQ(config->model.params,
            (std::map<std::string, double>{{"ials.reg", 0.2}, {"ials.iterations", 5}}));
  // The resolved configuration lists the model's keys with their defaults and
  // reads back to the same values.
  const std::string resolved = WriteFile("resolved.toml", ConfigToToml(*config));
  Result<Config> again = LoadConfigFile(resolved);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->model.params.at("ials.reg"), 0.2);
  EXPECT_EQ(again->model.params.at("ials.iterations"), 5);
  EXPECT_EQ(again->model.params.count("ials.alpha0"), 1u);
}

TEST(Config, UnknownModelKeyNamesTheModelsKeys) {
  Config config;
  const Status typo = ApplyOverride(&config, "model.ease.lamda=3");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.message().find("model ease has model.ease.lambda"), std::string::npos)
      << typo.message();
  const std::string path = WriteFile("bad_model_key.toml", "[model.bpr]\nlearning = 0.1\n");
  Result<Config> loaded = LoadConfigFile(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("bad_model_key.toml:2"), std::string::npos)
      << loaded.status().message();
  const Status not_number = ApplyOverride(&config, "model.ease.lambda=big");
  ASSERT_FALSE(not_number.ok());
  EXPECT_NE(not_number.message().find("expected a number, found \"big\""), std::string::npos);
}

TEST(Config, UnknownKeyNamesFileLineAndKnownKeys) {
  const std::string path = WriteFile("typo.toml", "[train]\nlr = 0.02\nlearning_rate = 1\n");
  Result<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  const std::string& m = config.status().message();
  EXPECT_NE(m.find("typo.toml:3"), std::string::npos) << m;
  EXPECT_NE(m.find("train.learning_rate"), std::string::npos) << m;
  EXPECT_NE(m.find("train.lr"), std::string::npos) << m;
}

TEST(Config, WrongTypeNamesKeyAndExpectedType) {
  const std::string path = WriteFile("type.toml", "[federation]\nsites = \"ten\"\n");
  Result<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("type.toml:2: federation.sites: expected an integer"),
            std::string::npos)
      << config.status().message();
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  const std::string path = WriteFile("syntax.toml", "[train\nlr = 1\n");
  Result<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("syntax.toml:1:"), std::string::npos)
      << config.status().message();
}

TEST(Config, SetOverridesEveryType) {
  Config c;
  ASSERT_TRUE(ApplyOverride(&c, "train.lr=0.5").ok());
  ASSERT_TRUE(ApplyOverride(&c, "federation.sites=4").ok());
  ASSERT_TRUE(ApplyOverride(&c, "eval.ranking=false").ok());
  ASSERT_TRUE(ApplyOverride(&c, "data.train=/tmp/x y.csv").ok());
  ASSERT_TRUE(ApplyOverride(&c, "data.format=\"ml100k\"").ok());
  ASSERT_TRUE(ApplyOverride(&c, "seed=123").ok());
  EXPECT_DOUBLE_EQ(c.train.lr, 0.5);
  EXPECT_EQ(c.federation.sites, 4);
  EXPECT_FALSE(c.eval.ranking);
  EXPECT_EQ(c.data.train, "/tmp/x y.csv");
  EXPECT_EQ(c.data.format, "ml100k");
  EXPECT_EQ(c.seed, 123u);
}

TEST(Config, SetRejectsBadValuesUnknownKeysAndMissingEquals) {
  Config c;
  Status bad_number = ApplyOverride(&c, "train.lr=fast");
  ASSERT_FALSE(bad_number.ok());
  EXPECT_NE(bad_number.message().find("expected a number, found \"fast\""), std::string::npos);
  Status unknown = ApplyOverride(&c, "train.speed=1");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.message().find("unknown key 'train.speed'"), std::string::npos);
  EXPECT_FALSE(ApplyOverride(&c, "train.lr").ok());
  EXPECT_FALSE(ApplyOverride(&c, "eval.ranking=yes").ok());
  EXPECT_FALSE(ApplyOverride(&c, "federation.sites=3.5").ok());
}

TEST(Config, ValidationNamesKeyExpectedAndFound) {
  Config c;
  c.federation.fraction = 1.5;
  Status s = ValidateConfig(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("federation.fraction"), std::string::npos);
  EXPECT_NE(s.message().find("1.5"), std::string::npos);
  c = Config();
  c.federation.partition = "random";
  EXPECT_FALSE(ValidateConfig(c).ok());
  EXPECT_TRUE(ValidateConfig(Config()).ok());
}

TEST(Config, ThreatModelRatesAreCheckedAgainstTheScheme) {
  const auto message = [](const Config& c) { return ValidateConfig(c).message(); };
  Config c;
  c.security.adversarial_rate = 1.0;
  EXPECT_NE(message(c).find("security.adversarial_rate"), std::string::npos) << message(c);
  c = Config();
  c.security.dropout_rate = -0.5;
  EXPECT_NE(message(c).find("security.dropout_rate"), std::string::npos) << message(c);
  // secagg+ has no graph beyond 0.9 colluders and dropouts together.
  c = Config();
  c.security.aggregation = "secagg+";
  c.security.adversarial_rate = 0.5;
  c.security.dropout_rate = 0.5;
  EXPECT_NE(message(c).find("0.5 + 0.5"), std::string::npos) << message(c);
  // secagg's threshold must exceed the colluders.
  c = Config();
  c.security.adversarial_rate = 0.6;
  EXPECT_NE(message(c).find("security.threshold"), std::string::npos) << message(c);
  EXPECT_NE(message(c).find("0.6"), std::string::npos) << message(c);
  c.security.aggregation = "none";
  EXPECT_TRUE(ValidateConfig(c).ok()) << message(c);
}

TEST(Config, PaillierNeedsSiteKeysForRunsAcrossProcessesAnd2048BitKeys) {
  Config c;
  c.security.aggregation = "paillier";
  EXPECT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();  // fedrec sim makes keys
  const Status s = ValidateDistributedConfig(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("security.site_public_keys"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("fedrec keygen"), std::string::npos) << s.message();
  c.security.site_public_keys = "keys/site{site}.pub";
  EXPECT_TRUE(ValidateDistributedConfig(c).ok());
  c.security.paillier_bits = 1024;
  EXPECT_NE(ValidateConfig(c).message().find("security.paillier_bits"), std::string::npos)
      << ValidateConfig(c).message();
  c.security.paillier_bits = 2048;
  c.federation.sites = 3;
  c.security.adversarial_rate = 0.5;  // 2 colluders of 3: no threshold leaves 2 honest sites
  EXPECT_NE(ValidateConfig(c).message().find("threshold"), std::string::npos)
      << ValidateConfig(c).message();
  c.security.aggregation = "secagg";
  c.security.adversarial_rate = 0.05;
  EXPECT_TRUE(ValidateDistributedConfig(c).ok());
}

TEST(Config, ResolvedTomlReadsBackToTheSameConfig) {
  Config c;
  c.seed = 99;
  c.train.lr = 0.0123;
  c.data.train = "a \"quoted\" path";
  c.eval.ranking = false;
  const std::string path = WriteFile("resolved.toml", ConfigToToml(c, true));
  Result<Config> back = LoadConfigFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(ConfigToToml(*back), ConfigToToml(c));
}

}  // namespace
}  // namespace fedrec
