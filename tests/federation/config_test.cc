#include "apps/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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
