#include "apps/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "apps/job.h"

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

// Found by fuzz_config: values and plug-in key names set with --set that
// ConfigToToml rendered into a file that does not load.
TEST(Config, AnythingSetRendersToAFileThatLoadsBack) {
  Config config;
  ASSERT_TRUE(ApplyOverride(&config,
                            "output.dir=a\x01"
                            "b\x7f\tc\"d")
                  .ok());
  const Status not_utf8 = ApplyOverride(&config,
                                        "federation.strategy=f\xe9\x91"
                                        "dprox");
  ASSERT_FALSE(not_utf8.ok());
  EXPECT_NE(not_utf8.message().find("expected UTF-8 text"), std::string::npos)
      << not_utf8.message();
  EXPECT_FALSE(ApplyOverride(&config, "strategy.fed\x02prox.mu=0.1").ok());
  const std::string path = WriteFile("rendered.toml", ConfigToToml(config));
  Result<Config> again = LoadConfigFile(path);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->output.dir,
            "a\x01"
            "b\x7f\tc\"d");
  EXPECT_EQ(ConfigToToml(*again), ConfigToToml(config));
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

TEST(Config, TrainingThreadsScheduleAndBlocksAreCheckedAndReachTheTrainer) {
  const auto refused = [](const std::string& assignment) {
    Config c;
    EXPECT_TRUE(ApplyOverride(&c, assignment).ok()) << assignment;
    return ValidateConfig(c).message();
  };
  EXPECT_NE(
      refused("train.threads=-1")
          .find(
              "config train.threads: expected an integer in [0, 4096] (0 = every core), found -1"),
      std::string::npos)
      << refused("train.threads=-1");
  EXPECT_NE(
      refused("train.schedule=hogwild")
          .find("config train.schedule: expected grid, free or sequential, found \"hogwild\""),
      std::string::npos)
      << refused("train.schedule=hogwild");
  EXPECT_NE(refused("train.blocks=0")
                .find("config train.blocks: expected an integer in [1, 4096], found 0"),
            std::string::npos)
      << refused("train.blocks=0");

  Config c;
  ASSERT_TRUE(ApplyOverride(&c, "train.schedule=free").ok());
  ASSERT_TRUE(ApplyOverride(&c, "train.threads=3").ok());
  ASSERT_TRUE(ApplyOverride(&c, "train.blocks=5").ok());
  ASSERT_TRUE(ValidateConfig(c).ok());
  const SgdParallelism parallel = TrainerOptions(c).sgd.parallel;
  EXPECT_EQ(parallel.schedule, SgdSchedule::kFree);
  EXPECT_EQ(parallel.threads, 3u);
  EXPECT_EQ(parallel.blocks, 5u);
  EXPECT_EQ(TrainerOptions(Config()).sgd.parallel.schedule, SgdSchedule::kGrid);  // the default
}

TEST(Config, LocalEpochsDefaultToTheModelsOwnAndAnExplicitValueWins) {
  Config c;
  EXPECT_EQ(c.federation.local_epochs, 0);
  EXPECT_EQ(LocalEpochs(c), 2u);  // mf
  EXPECT_EQ(MakeCoordinatorOptions(c).local_epochs, 2u);
  for (const char* network : {"shared_bottom", "mmoe", "ple"}) {
    c.model.name = network;
    EXPECT_EQ(LocalEpochs(c), 3u) << network;
    EXPECT_EQ(MakeStrategyOptions(c).instructions.local_epochs, 3u) << network;
  }
  c.federation.local_epochs = 5;
  EXPECT_EQ(LocalEpochs(c), 5u);
  EXPECT_EQ(MakeCoordinatorOptions(c).local_epochs, 5u);

  Config bad;
  bad.federation.local_epochs = -1;
  EXPECT_NE(ValidateConfig(bad).message().find("config federation.local_epochs: expected 0 (the "
                                               "model's own) or a whole number >= 1, found -1"),
            std::string::npos)
      << ValidateConfig(bad).message();
  // local_epochs_max is checked against the resolved count: 3 for mmoe.
  Config heterogeneous;
  heterogeneous.model.name = "mmoe";
  heterogeneous.federation.local_epochs_max = 2;
  EXPECT_NE(ValidateConfig(heterogeneous).message().find("federation.local_epochs (3)"),
            std::string::npos)
      << ValidateConfig(heterogeneous).message();
  heterogeneous.federation.local_epochs_max = 4;
  EXPECT_TRUE(ValidateConfig(heterogeneous).ok());
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

TEST(Config, SecAggGraphIsAutoUnlessSetAndSecAggPlusForbidsTheCompleteGraph) {
  const auto message = [](const Config& c) { return ValidateConfig(c).message(); };
  Config c;
  EXPECT_EQ(c.security.graph, "auto");
  EXPECT_TRUE(ValidateConfig(c).ok()) << message(c);
  c.security.graph = "ring";
  EXPECT_NE(message(c).find("security.graph"), std::string::npos) << message(c);
  c.security.graph = "complete";
  EXPECT_TRUE(ValidateConfig(c).ok()) << message(c);
  c.security.aggregation = "secagg+";
  EXPECT_NE(message(c).find("security.graph"), std::string::npos) << message(c);
  EXPECT_NE(message(c).find("security.aggregation"), std::string::npos) << message(c);
  c.security.graph = "sparse";
  EXPECT_TRUE(ValidateConfig(c).ok()) << message(c);
  EXPECT_EQ(SecAggPolicy(c).graph, secagg::Graph::kSparse);
  c = Config();
  EXPECT_EQ(SecAggPolicy(c).graph, secagg::Graph::kAuto);
  c.security.graph = "complete";
  EXPECT_EQ(SecAggPolicy(c).graph, secagg::Graph::kComplete);
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

TEST(Config, IdentityAndPublicKeySettingsAreRequiredTogether) {
  Config c;
  EXPECT_TRUE(ValidateConfig(c).ok());  // none: ephemeral identities
  c.security.site_public_keys = "keys/site{site}.pub";
  const Status partial = ValidateConfig(c);
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.message().find("config security.coordinator_identity: expected a value"),
            std::string::npos)
      << partial.message();
  EXPECT_NE(partial.message().find("set: security.site_public_keys; missing: "
                                   "security.coordinator_identity, "
                                   "security.coordinator_public_key, security.site_identity"),
            std::string::npos)
      << partial.message();
  c.security.coordinator_identity = "keys/coordinator.key";
  c.security.coordinator_public_key = "keys/coordinator.pub";
  const Status one_missing = ValidateConfig(c);
  ASSERT_FALSE(one_missing.ok());
  EXPECT_NE(one_missing.message().find("config security.site_identity: expected a value"),
            std::string::npos)
      << one_missing.message();
  c.security.site_identity = "keys/site{site}.key";
  EXPECT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
}

TEST(Config, ItemUniverseOnlyWithPerSiteFiles) {
  Config c;
  c.data.item_universe = "items.txt";
  const Status refused = ValidateConfig(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("config data.item_universe: expected to be empty unless "
                                   "federation.partition = files"),
            std::string::npos)
      << refused.message();
  c.federation.partition = "files";
  c.data.site_train = "site{site}.csv";
  EXPECT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
}

TEST(Config, NewKeysAreDocumented) {
  std::string docs;
  for (const std::string& line : ConfigKeyDocs()) docs += line + "\n";
  EXPECT_NE(docs.find("| `security.allow_unauthenticated` | boolean (true or false) | `false` |"),
            std::string::npos);
  EXPECT_NE(docs.find("| `data.item_universe` | string | `\"\"` |"), std::string::npos);
  Config c;
  ASSERT_TRUE(ApplyOverride(&c, "security.allow_unauthenticated=true").ok());
  EXPECT_TRUE(c.security.allow_unauthenticated);
}

Config WithKeys(Config c) {
  c.security.coordinator_identity = "keys/coordinator.key";
  c.security.coordinator_public_key = "keys/coordinator.pub";
  c.security.site_identity = "keys/site{site}.key";
  c.security.site_public_keys = "keys/site{site}.pub";
  return c;
}

TEST(RunChecks, OneHostRunsWithoutIdentityKeys) {
  EXPECT_TRUE(CheckRunConfig(Config(), {"node1", "node1", "node1", "node1"}).ok());
  EXPECT_TRUE(CheckRunConfig(Config(), {}).ok());
}

TEST(RunChecks, SeveralHostsNeedAuthenticatedChannels) {
  const std::vector<std::string> hosts = {"node1", "node2", "node1", "node2"};
  const Status refused = CheckRunConfig(Config(), hosts);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
  for (const char* expected :
       {"the job spans 2 hosts (node1, node2)", "no identity keys are configured",
        "security.coordinator_identity", "security.site_public_keys", "fedrec keygen --dir keys",
        "security.allow_unauthenticated = true"}) {
    EXPECT_NE(refused.message().find(expected), std::string::npos)
        << expected << " in " << refused.message();
  }
  EXPECT_TRUE(CheckRunConfig(WithKeys(Config()), hosts).ok());
  Config unsealed = WithKeys(Config());
  unsealed.security.channels = false;
  const Status plain = CheckRunConfig(unsealed, hosts);
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.message().find("security.channels = false"), std::string::npos)
      << plain.message();
  Config allowed;
  allowed.security.allow_unauthenticated = true;
  EXPECT_TRUE(CheckRunConfig(allowed, hosts).ok());
}

TEST(RunChecks, PerSiteFilesWithEncryptedAggregationNeedAnItemUniverse) {
  Config c;
  c.federation.partition = "files";
  c.data.site_train = "site{site}.csv";
  for (const char* aggregation : {"secagg", "secagg+", "paillier"}) {
    c.security.aggregation = aggregation;
    const Status refused = CheckRunConfig(c, {"node1"});
    ASSERT_FALSE(refused.ok()) << aggregation;
    EXPECT_NE(refused.message().find("config data.item_universe: expected the published item "
                                     "list"),
              std::string::npos)
        << refused.message();
    EXPECT_NE(refused.message().find(aggregation), std::string::npos) << refused.message();
  }
  c.data.item_universe = "items.txt";
  EXPECT_TRUE(CheckRunConfig(c, {"node1"}).ok());
  c.data.item_universe.clear();
  c.security.aggregation = "none";
  EXPECT_TRUE(CheckRunConfig(c, {"node1"}).ok());
}

TEST(JobIdentifier, BindsTheConfigTheCoordinatorAndTheNonce) {
  Config c;
  crypto::Key32 key{}, nonce{};
  key[0] = 1;
  nonce[0] = 2;
  const crypto::Key32 job = JobId(c, key, nonce);
  EXPECT_EQ(JobId(c, key, nonce), job);  // a function of its inputs
  Config other = c;
  other.federation.rounds += 1;
  EXPECT_NE(JobId(other, key, nonce), job);
  crypto::Key32 other_key = key;
  other_key[31] ^= 1;
  EXPECT_NE(JobId(c, other_key, nonce), job);
  crypto::Key32 other_nonce = nonce;
  other_nonce[31] ^= 1;
  EXPECT_NE(JobId(c, key, other_nonce), job);
  // A fresh nonce per job: two jobs of the same config differ.
  Result<crypto::Key32> first = NewJobId(c, key), second = NewJobId(c, key);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);
  EXPECT_NE(PopularityJobId(job), job);
}

TEST(ItemUniverse, ReadsOneIdPerLineAndNamesDuplicates) {
  const std::string good = WriteFile("universe.txt", "i1\n\n  i2 \r\ni3\n");
  Result<std::vector<std::string>> ids = ReadItemUniverse(good);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(*ids, (std::vector<std::string>{"i1", "i2", "i3"}));
  const std::string twice = WriteFile("universe_twice.txt", "i1\ni2\ni1\n");
  const Status dup = ReadItemUniverse(twice).status();
  EXPECT_NE(dup.message().find(twice + ":3: item 'i1' is listed twice (first at line 1)"),
            std::string::npos)
      << dup.message();
  EXPECT_FALSE(ReadItemUniverse(WriteFile("universe_empty.txt", "\n")).ok());
  EXPECT_EQ(ReadItemUniverse(good + ".missing").status().code(), Status::Code::kNotFound);
}

TEST(ItemUniverse, SitesNumberTheirItemsByTheUniverse) {
  const std::string site0 = WriteFile("uni_site0.csv", "u1,b,4\nu1,c,3\nu2,b,5\n");
  WriteFile("uni_site1.csv", "u3,a,2\nu3,c,4\n");
  Config c;
  c.federation.partition = "files";
  c.federation.sites = 2;
  c.data.format = "csv";
  c.data.test_fraction = 0.0;
  c.data.site_train = site0.substr(0, site0.rfind('/')) + "/uni_site{site}.csv";
  c.data.item_universe = WriteFile("uni_items.txt", "c\nz\nb\na\n");
  Result<FederatedData> data = LoadFederatedData(c);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  ASSERT_EQ(data->dataset.items.size(), 4u);  // the universe, unused items included
  EXPECT_EQ(data->dataset.items.Raw(0), "c");
  EXPECT_EQ(data->dataset.items.Raw(3), "a");
  // `fedrec run`: a site numbers the same way, alone.
  Result<LocalSite> site1 = LoadLocalSite(c, 1);
  ASSERT_TRUE(site1.ok()) << site1.status().ToString();
  EXPECT_TRUE(site1->in_universe);
  EXPECT_EQ(site1->item_ids.size(), 4u);
  for (const Rating& r : site1->data.train) {
    EXPECT_TRUE(r.item == 3 || r.item == 0) << r.item;  // a and c
  }
  // An item the universe lacks names the site, its file and the line.
  c.data.item_universe = WriteFile("uni_items_short.txt", "c\nb\n");
  const Status outside = LoadLocalSite(c, 1).status();
  EXPECT_NE(outside.message().find("site 1"), std::string::npos) << outside.message();
  EXPECT_NE(outside.message().find("uni_site1.csv:1: item 'a' is not in the item universe"),
            std::string::npos)
      << outside.message();
  EXPECT_FALSE(LoadFederatedData(c).ok());
}

}  // namespace
}  // namespace fedrec
