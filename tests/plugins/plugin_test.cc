#include "apps/plugin.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "apps/config.h"
#include "base/version.h"

namespace fedrec {
namespace {

std::string TestPlugin(const std::string& kind) {
  return std::string(TEST_PLUGIN_DIR) + "/libtest_plugin_" + kind + ".so";
}

std::string TempDir() {
  const char* dir = std::getenv("FEDREC_TEST_TMPDIR");
  const std::string base = (dir ? std::string(dir) : ::testing::TempDir()) + "/plugins";
  std::filesystem::create_directories(base);
  return base;
}

// The built-in registries with the plug-in at `path` loaded.
struct Loaded {
  StrategyRegistry strategies = StrategyRegistry::WithBuiltins();
  ModelRegistry models = ModelRegistry::WithBuiltins();
  Status status;
  explicit Loaded(const std::string& path) : status(LoadPlugin(path, {&strategies, &models})) {}
};

void ExpectHas(const Status& status, const std::string& text) {
  EXPECT_NE(status.message().find(text), std::string::npos)
      << "expected \"" << text << "\" in: " << status.message();
}

// One row of one column, at x = 0.
std::vector<ParamBlock> OneRowModel(float x) {
  std::vector<ParamBlock> global;
  global.emplace_back("item", Scope::kGlobal, 2, 1);
  global[0].data = {x, 7.0f};
  return global;
}

// Sites whose weighted average of row 0 is `avg` (total weight 3); no site
// trained row 1.
AggregateInput Round(uint32_t round, double avg) {
  AggregateInput input;
  input.round = round;
  input.weighted_sum = {{3.0 * avg, 0.0}};
  input.row_weight = {{3.0, 0.0}};
  input.sites = 3;
  return input;
}

TEST(Plugins, VersionHeaderMatchesTheProjectVersion) {
  EXPECT_EQ(std::string(FEDREC_VERSION_STRING), std::to_string(FEDREC_VERSION_MAJOR) + "." +
                                                    std::to_string(FEDREC_VERSION_MINOR) + "." +
                                                    std::to_string(FEDREC_VERSION_PATCH));
  EXPECT_EQ(kFedrecVersion.major_version, static_cast<uint32_t>(FEDREC_VERSION_MAJOR));
}

TEST(Plugins, OutOfTreeStrategyStepsWithADecayingServerRate) {
  Loaded loaded(FEDAVG_DECAY_PLUGIN);
  ASSERT_TRUE(loaded.status.ok()) << loaded.status.ToString();
  ASSERT_NE(loaded.strategies.Find("fedavg_decay"), nullptr);
  StrategyOptions options;
  options.params = {{"eta0", 2.0}, {"decay", 0.5}};
  Result<std::unique_ptr<Strategy>> strategy = loaded.strategies.Create("fedavg_decay", options);
  ASSERT_TRUE(strategy.ok()) << strategy.status().ToString();
  EXPECT_FALSE((*strategy)->NeedsIndividualUpdates());  // runs under secure aggregation

  // eta_1 = 2: 0 + 2 (1 - 0) = 2; eta_2 = 1: 2 + 1 (1 - 2) = 1. Row 1, which
  // no site trained, keeps its value.
  std::vector<ParamBlock> global = OneRowModel(0.0f);
  ASSERT_TRUE((*strategy)->Aggregate(Round(1, 1.0), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 2.0f);
  ASSERT_TRUE((*strategy)->Aggregate(Round(2, 1.0), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 1.0f);
  EXPECT_FLOAT_EQ(global[0].data[1], 7.0f);

  // The round counter is its state: a restored copy takes eta_3 = 0.5,
  // 1 + 0.5 (3 - 1) = 2.
  const StrategyState state = (*strategy)->State();
  EXPECT_EQ(state.scalars, (std::map<std::string, double>{{"aggregated", 2.0}}));
  Result<std::unique_ptr<Strategy>> resumed = loaded.strategies.Create("fedavg_decay", options);
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->Restore(state).ok());
  ASSERT_TRUE((*resumed)->Aggregate(Round(3, 3.0), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 2.0f);

  StrategyState bad;
  bad.scalars["aggregated"] = -1.0;
  const Status refused = (*resumed)->Restore(bad);
  ASSERT_FALSE(refused.ok());
  ExpectHas(refused, "expected a state of one scalar 'aggregated'");
}

TEST(Plugins, PluginStrategyKeysGetDefaultsAndUnknownKeysAreRefusedAtCreation) {
  Loaded loaded(FEDAVG_DECAY_PLUGIN);
  ASSERT_TRUE(loaded.status.ok()) << loaded.status.ToString();
  // The config parser accepts any strategy.<name>.<key>; the registry checks
  // a plug-in's keys when the strategy is created.
  Config config;
  ASSERT_TRUE(ApplyOverride(&config, "strategy.fedavg_decay.decay=0.8").ok());
  ASSERT_TRUE(ApplyOverride(&config, "strategy.fedavg_decay.eta=3").ok());
  StrategyOptions options;
  options.params = {{"decay", 0.8}};
  Result<std::unique_ptr<Strategy>> strategy = loaded.strategies.Create("fedavg_decay", options);
  ASSERT_TRUE(strategy.ok()) << strategy.status().ToString();
  EXPECT_DOUBLE_EQ((*strategy)->options().Param("eta0"), 2.0);  // the declared default
  options.params = {{"eta", 3.0}};
  Result<std::unique_ptr<Strategy>> typo = loaded.strategies.Create("fedavg_decay", options);
  ASSERT_FALSE(typo.ok());
  ExpectHas(typo.status(), "eta0");
  ExpectHas(typo.status(), "decay");
  options.params = {{"decay", 1.5}};
  Result<std::unique_ptr<Strategy>> out_of_range =
      loaded.strategies.Create("fedavg_decay", options);
  ASSERT_FALSE(out_of_range.ok());
  ExpectHas(out_of_range.status(),
            "strategy.fedavg_decay.decay: expected a number in (0, 1], found 1.5");
}

TEST(Plugins, UnknownStrategyListsTheBuiltinsAndThePluginsStrategies) {
  Loaded loaded(FEDAVG_DECAY_PLUGIN);
  ASSERT_TRUE(loaded.status.ok()) << loaded.status.ToString();
  Result<std::unique_ptr<Strategy>> unknown = loaded.strategies.Create("fedavg_dekay", {});
  ASSERT_FALSE(unknown.ok());
  ExpectHas(unknown.status(), "unknown strategy 'fedavg_dekay'; registered: ");
  ExpectHas(unknown.status(), "fedavg, fedavg_decay, fedavgm");
}

TEST(Plugins, BuiltAgainstAnotherMinorVersionIsRefusedWithBothVersions) {
  Loaded loaded(TestPlugin("other_minor"));
  ASSERT_FALSE(loaded.status.ok());
  EXPECT_EQ(loaded.status.message(), TestPlugin("other_minor") + " was built against fedrec " +
                                         std::to_string(FEDREC_VERSION_MAJOR) + "." +
                                         std::to_string(FEDREC_VERSION_MINOR + 1) +
                                         ".0; this is fedrec " + FEDREC_VERSION_STRING +
                                         ": rebuild the plug-in against this version");
  EXPECT_EQ(loaded.strategies.Find("should_not_load"), nullptr);
}

TEST(Plugins, BuiltAgainstAnotherPatchReleaseLoads) {
  Loaded loaded(TestPlugin("other_patch"));
  ASSERT_TRUE(loaded.status.ok()) << loaded.status.ToString();
  EXPECT_NE(loaded.strategies.Find("patch_release"), nullptr);
}

TEST(Plugins, MissingFileIsAnErrorNamingThePath) {
  const std::string path = TempDir() + "/no-such-plugin.so";
  Loaded loaded(path);
  ASSERT_FALSE(loaded.status.ok());
  EXPECT_EQ(loaded.status.code(), Status::Code::kNotFound);
  EXPECT_EQ(loaded.status.message(), "plug-in " + path +
                                         ": expected a shared library, found no such file "
                                         "(looked for " +
                                         path + ")");
}

TEST(Plugins, RelativePathIsLookedUpInTheWorkingDirectoryNotTheLibraryPath) {
  // "libc.so.6" is on the library path, but it is not a file here.
  Loaded loaded("libc.so.6");
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status, "expected a shared library, found no such file (looked for " +
                               (std::filesystem::current_path() / "libc.so.6").string() + ")");
}

TEST(Plugins, FileThatIsNotASharedLibraryReportsTheLoadersReason) {
  const std::string path = TempDir() + "/text.so";
  // Longer than an ELF header, so the loader reads the header and rejects it.
  std::ofstream(path) << std::string(256, '#') << "\nnot an ELF file\n";
  Loaded loaded(path);
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status, "plug-in " + path + ": the dynamic loader refused it: ");
  ExpectHas(loaded.status, "invalid ELF header");
}

TEST(Plugins, SharedLibraryWithoutTheEntryPointsIsNotAPlugin) {
  Loaded loaded(TestPlugin("not_a_plugin"));
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status, TestPlugin("not_a_plugin") +
                               " is not a fedrec plug-in: it has no fedrec_plugin_version");
}

TEST(Plugins, RegisterFunctionThatThrowsIsAnErrorNotACrash) {
  Loaded loaded(TestPlugin("throws"));
  ASSERT_FALSE(loaded.status.ok());
  EXPECT_EQ(loaded.status.message(), "plug-in " + TestPlugin("throws") +
                                         ": its register function failed: the register "
                                         "function threw: no registration today");
}

TEST(Plugins, RegisterFunctionErrorLeavesTheRegistriesUnchanged) {
  Loaded loaded(TestPlugin("fails"));
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status, "its register function failed: strategy.x: expected a licence file");
  EXPECT_EQ(loaded.strategies.Find("half_registered"), nullptr);
}

TEST(Plugins, PluginThatRegistersNothingIsRefused) {
  Loaded loaded(TestPlugin("empty"));
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status,
            "expected its register function to register a strategy or a model, found none");
}

TEST(Plugins, NameAlreadyRegisteredIsRefusedAndNoneOfThePluginsNamesAreAdded) {
  Loaded loaded(TestPlugin("taken_name"));
  ASSERT_FALSE(loaded.status.ok());
  ExpectHas(loaded.status, "expected names not registered yet, found strategy \"fedavg\"");
  EXPECT_EQ(loaded.strategies.Find("fresh_name"), nullptr);
  EXPECT_EQ(loaded.strategies.Names(), StrategyRegistry::WithBuiltins().Names());
}

TEST(Plugins, LoadingTheSamePluginTwiceInOneJobIsRefusedAsATakenName) {
  Result<JobRegistries> job = LoadJobRegistries({FEDAVG_DECAY_PLUGIN, FEDAVG_DECAY_PLUGIN});
  ASSERT_FALSE(job.ok());
  ExpectHas(job.status(), "found strategy \"fedavg_decay\"");
}

TEST(Plugins, JobRegistriesKeepAProgramsOwnRegistrations) {
  ModelRegistry models;  // a program with no built-in models
  Result<JobRegistries> job = LoadJobRegistries({FEDAVG_DECAY_PLUGIN}, {nullptr, &models});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_TRUE(job->models.Names().empty());
  EXPECT_NE(job->strategies.Find("fedavg"), nullptr);
  EXPECT_NE(job->strategies.Find("fedavg_decay"), nullptr);
}

TEST(PluginsConfig, ArrayInAFileResolvesRelativePathsAgainstTheFilesDirectory) {
  const std::string dir = TempDir() + "/conf";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/job.toml";
  std::ofstream(path) << "plugins = [\"build/liba.so\", \"/opt/libb.so\", \"../libc.so\"]\n";
  Result<Config> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const std::string abs_dir = std::filesystem::absolute(dir).lexically_normal().string();
  EXPECT_EQ(config->plugins,
            (std::vector<std::string>{
                abs_dir + "/build/liba.so", "/opt/libb.so",
                std::filesystem::path(abs_dir).parent_path().string() + "/libc.so"}));
  // The resolved configuration reads back to the same list.
  const std::string resolved = TempDir() + "/resolved.toml";
  std::ofstream(resolved) << ConfigToToml(*config);
  Result<Config> again = LoadConfigFile(resolved);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->plugins, config->plugins);
}

TEST(PluginsConfig, WrongTypesInAFileNameTheLineAndWhatWasFound) {
  const std::string path = TempDir() + "/bad.toml";
  std::ofstream(path) << "seed = 1\nplugins = \"liba.so\"\n";
  Result<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            path + ":2: plugins: expected an array of strings, found a string");
  std::ofstream(path) << "plugins = [\"liba.so\", 3]\n";
  config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            path + ":1: plugins: expected an array of strings, found an integer at index 1");
}

TEST(PluginsConfig, OverrideTakesCommaSeparatedPathsOrATomlArray) {
  Config config;
  ASSERT_TRUE(ApplyOverride(&config, "plugins=a.so,dir/b.so").ok());
  EXPECT_EQ(config.plugins, (std::vector<std::string>{"a.so", "dir/b.so"}));
  ASSERT_TRUE(ApplyOverride(&config, "plugins=[\"c.so\", \"d,e.so\"]").ok());
  EXPECT_EQ(config.plugins, (std::vector<std::string>{"c.so", "d,e.so"}));
  ASSERT_TRUE(ApplyOverride(&config, "plugins=").ok());
  EXPECT_TRUE(config.plugins.empty());
  const Status empty_entry = ApplyOverride(&config, "plugins=a.so,,b.so");
  ASSERT_FALSE(empty_entry.ok());
  EXPECT_EQ(empty_entry.message(),
            "--set plugins=a.so,,b.so: expected comma-separated values, none empty, found "
            "\"a.so,,b.so\"");
  const Status not_strings = ApplyOverride(&config, "plugins=[1, 2]");
  ASSERT_FALSE(not_strings.ok());
  ExpectHas(not_strings, "expected an array of strings, found \"[1, 2]\"");
}

TEST(PluginsConfig, KeyIsDocumentedAsAnArrayOfStrings) {
  std::string docs;
  for (const std::string& line : ConfigKeyDocs()) docs += line + "\n";
  EXPECT_NE(docs.find("| `plugins` | array of strings | `[]` |"), std::string::npos) << docs;
}

}  // namespace
}  // namespace fedrec
