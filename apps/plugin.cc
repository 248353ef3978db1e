#include "apps/plugin.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cassert>
#include <filesystem>
#include <system_error>

#include "base/param_keys.h"

namespace fedrec {

namespace {

namespace fs = std::filesystem;

using VersionFunction = PluginVersion (*)();
using RegisterFunction = void (*)(const PluginRegistries*, Status*);

std::string VersionString(const PluginVersion& v) {
  return fmt::format("{}.{}.{}", v.major_version, v.minor_version, v.patch_version);
}

// The dynamic loader's last error, or `fallback` when it has none.
std::string LoaderError(const char* fallback) {
  const char* error = dlerror();
  return error != nullptr ? std::string(error) : std::string(fallback);
}

// Closes the handle of a refused plug-in.
class Handle {
 public:
  explicit Handle(void* handle) : handle_(handle) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (handle_ != nullptr) dlclose(handle_);
  }
  void* get() const { return handle_; }
  // Keeps the library loaded for the rest of the process.
  void Keep() { handle_ = nullptr; }

 private:
  void* handle_;
};

// Names registered in `staging` that `target` already has.
template <typename Registry>
std::vector<std::string> Taken(const Registry& staging, const Registry& target) {
  std::vector<std::string> taken;
  for (const std::string& name : staging.Names()) {
    if (target.Find(name) != nullptr) taken.push_back("\"" + name + "\"");
  }
  return taken;
}

}  // namespace

Status LoadPlugin(const std::string& path, const PluginRegistries& registries) {
  assert(registries.strategies != nullptr && registries.models != nullptr);
  const std::string where = "plug-in " + path;
  std::error_code error;
  if (path.empty()) return Status::InvalidArgument(where + ": expected a file path, found \"\"");
  const fs::path absolute = fs::absolute(path, error);
  if (error || !fs::exists(absolute, error)) {
    return Status::NotFound(
        fmt::format("{}: expected a shared library, found no such file (looked for {})", where,
                    absolute.empty() ? path : absolute.string()));
  }
  dlerror();  // clear any earlier error
  Handle handle(dlopen(absolute.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (handle.get() == nullptr) {
    const std::string reason = LoaderError("the dynamic loader gave no reason");
    std::string hint;
    // An unresolved fedrec symbol, or another libfedrec.so.<major>.<minor>,
    // means the plug-in was built against another fedrec.
    if (reason.find("libfedrec.so") != std::string::npos ||
        reason.find("_ZN6fedrec") != std::string::npos ||
        reason.find("_ZNK6fedrec") != std::string::npos) {
      hint = fmt::format(
          " (it was probably built against another fedrec; this is fedrec {}: rebuild the "
          "plug-in against this version)",
          VersionString(kFedrecVersion));
    }
    return Status::InvalidArgument(
        fmt::format("{}: the dynamic loader refused it: {}{}", where, reason, hint));
  }
  dlerror();
  auto version = reinterpret_cast<VersionFunction>(dlsym(handle.get(), kPluginVersionSymbol));
  auto register_function =
      reinterpret_cast<RegisterFunction>(dlsym(handle.get(), kPluginRegisterSymbol));
  for (const auto& [symbol, found] :
       {std::pair{kPluginVersionSymbol, version != nullptr},
        std::pair{kPluginRegisterSymbol, register_function != nullptr}}) {
    if (!found) {
      return Status::InvalidArgument(fmt::format(
          "{} is not a fedrec plug-in: it has no {} (a plug-in names its register function "
          "with FEDREC_PLUGIN, apps/plugin.h)",
          path, symbol));
    }
  }
  const PluginVersion built = version();
  if (built.major_version != kFedrecVersion.major_version ||
      built.minor_version != kFedrecVersion.minor_version) {
    return Status::InvalidArgument(fmt::format(
        "{} was built against fedrec {}; this is fedrec {}: rebuild the plug-in against this "
        "version",
        path, VersionString(built), VersionString(kFedrecVersion)));
  }

  // The plug-in registers on empty registries; its names join the job's only
  // when none is taken, so a failed plug-in leaves the job's registries as
  // they were.
  StrategyRegistry strategies;
  ModelRegistry models;
  const PluginRegistries staging{&strategies, &models};
  Status registered = Status::Internal("the register function did not report");
  register_function(&staging, &registered);
  // Whatever it registered may point into it: it stays loaded from here on.
  handle.Keep();
  if (!registered.ok()) {
    return Status(registered.code(),
                  fmt::format("{}: its register function failed: {}", where, registered.message()));
  }
  if (strategies.Names().empty() && models.Names().empty()) {
    return Status::InvalidArgument(
        where + ": expected its register function to register a strategy or a model, found none");
  }
  const std::vector<std::string> taken_strategies = Taken(strategies, *registries.strategies);
  const std::vector<std::string> taken_models = Taken(models, *registries.models);
  if (!taken_strategies.empty() || !taken_models.empty()) {
    std::string taken;
    if (!taken_strategies.empty()) taken += "strategy " + JoinNames(taken_strategies);
    if (!taken_models.empty())
      taken += (taken.empty() ? "" : " and ") + std::string("model ") + JoinNames(taken_models);
    return Status::InvalidArgument(fmt::format(
        "{}: expected names not registered yet, found {} (a built-in or an earlier plug-in "
        "has it): rename it in the plug-in",
        where, taken));
  }
  for (const std::string& name : strategies.Names())
    registries.strategies->Register(*strategies.Find(name));
  for (const std::string& name : models.Names()) registries.models->Register(*models.Find(name));
  spdlog::info("loaded plug-in {} (fedrec {}): strategies [{}], models [{}]", path,
               VersionString(built), JoinNames(strategies.Names()), JoinNames(models.Names()));
  return Status::Ok();
}

Status LoadPlugins(const std::vector<std::string>& paths, const PluginRegistries& registries) {
  for (const std::string& path : paths) FEDREC_RETURN_IF_ERROR(LoadPlugin(path, registries));
  return Status::Ok();
}

Result<JobRegistries> LoadJobRegistries(const std::vector<std::string>& paths,
                                        const Registries& base) {
  JobRegistries job{base.strategies ? *base.strategies : StrategyRegistry::WithBuiltins(),
                    base.models ? *base.models : ModelRegistry::WithBuiltins()};
  FEDREC_RETURN_IF_ERROR(LoadPlugins(paths, {&job.strategies, &job.models}));
  return job;
}

}  // namespace fedrec
