// Plug-ins that misbehave, for plugin_test.cc, one per TEST_PLUGIN_KIND:
//   1 other_minor   reports fedrec <major>.<minor + 1>.0 (its register
//                   function would register "should_not_load")
//   2 other_patch   reports fedrec <major>.<minor>.<patch + 1>; registers
//                   "patch_release"
//   3 throws        its register function throws std::runtime_error
//   4 taken_name    registers a strategy named "fedavg" (a built-in)
//   5 not_a_plugin  a shared library without the plug-in entry points
//   6 fails         its register function returns an error
//   7 empty         its register function registers nothing
#include <memory>
#include <stdexcept>

#include "algorithms/strategy.h"
#include "apps/plugin.h"

namespace {

// A strategy that keeps the model: enough to register a name.
class KeepModel : public fedrec::Strategy {
 public:
  KeepModel(const fedrec::StrategyOptions& options, std::string name)
      : Strategy(options), name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  fedrec::Status Aggregate(const fedrec::AggregateInput&,
                           std::vector<fedrec::ParamBlock>*) override {
    return fedrec::Status::Ok();
  }

 private:
  std::string name_;
};

[[maybe_unused]] void RegisterKeepModel(const fedrec::PluginRegistries& registries,
                                        const std::string& name) {
  registries.strategies->Register({name,
                                   "keeps the model (a test plug-in)",
                                   {},
                                   [name](const fedrec::StrategyOptions& options)
                                       -> fedrec::Result<std::unique_ptr<fedrec::Strategy>> {
                                     return std::unique_ptr<fedrec::Strategy>(
                                         std::make_unique<KeepModel>(options, name));
                                   }});
}

}  // namespace

#if TEST_PLUGIN_KIND == 1 || TEST_PLUGIN_KIND == 2
// The ABI written out by hand, to report another version than base/version.h.
extern "C" FEDREC_PLUGIN_EXPORT fedrec::PluginVersion fedrec_plugin_version() {
#if TEST_PLUGIN_KIND == 1
  return {FEDREC_VERSION_MAJOR, FEDREC_VERSION_MINOR + 1, 0};
#else
  return {FEDREC_VERSION_MAJOR, FEDREC_VERSION_MINOR, FEDREC_VERSION_PATCH + 1};
#endif
}
extern "C" FEDREC_PLUGIN_EXPORT void fedrec_plugin_register(
    const fedrec::PluginRegistries* registries, fedrec::Status* status) {
  RegisterKeepModel(*registries, TEST_PLUGIN_KIND == 1 ? "should_not_load" : "patch_release");
  *status = fedrec::Status::Ok();
}
#elif TEST_PLUGIN_KIND == 3
void Throw(const fedrec::PluginRegistries&) { throw std::runtime_error("no registration today"); }
FEDREC_PLUGIN(Throw)
#elif TEST_PLUGIN_KIND == 4
void RegisterFedAvg(const fedrec::PluginRegistries& registries) {
  RegisterKeepModel(registries, "fedavg");
  RegisterKeepModel(registries, "fresh_name");
}
FEDREC_PLUGIN(RegisterFedAvg)
#elif TEST_PLUGIN_KIND == 5
extern "C" FEDREC_PLUGIN_EXPORT int fedrec_test_not_a_plugin() { return 5; }
#elif TEST_PLUGIN_KIND == 6
fedrec::Status Fail(const fedrec::PluginRegistries& registries) {
  RegisterKeepModel(registries, "half_registered");
  return fedrec::Status::InvalidArgument("strategy.x: expected a licence file, found none");
}
FEDREC_PLUGIN(Fail)
#elif TEST_PLUGIN_KIND == 7
void Nothing(const fedrec::PluginRegistries&) {}
FEDREC_PLUGIN(Nothing)
#else
#error "TEST_PLUGIN_KIND must be 1 to 7"
#endif
