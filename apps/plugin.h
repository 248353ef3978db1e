// Plug-ins: strategies and models from shared libraries built outside the tree.
//
// A plug-in is a shared library linked against fedrec::fedrec (the installed
// package; docs/plugins.md is the tutorial) that defines one register function
// and names it with FEDREC_PLUGIN:
//
//   fedrec::Status Register(const fedrec::PluginRegistries& registries) {
//     registries.strategies->Register({"mystrategy", "one line", {/* keys */}, factory});
//     return fedrec::Status::Ok();
//   }
//   FEDREC_PLUGIN(Register)
//
// The register function may also return void. FEDREC_PLUGIN defines two
// extern "C" symbols, the plug-in ABI:
//   fedrec_plugin_version   the fedrec version the plug-in was compiled against
//                           (base/version.h at the plug-in's compile time);
//   fedrec_plugin_register  calls the register function, turning an exception
//                           into an error.
//
// Version rule: LoadPlugin refuses a plug-in whose major.minor differ from this
// fedrec's. The patch may differ: releases of one minor version keep the ABI
// of Strategy, Model, their registries and PluginRegistries (the shared
// library's SONAME is libfedrec.so.<major>.<minor> for the same reason).
//
// Lifetime: a loaded plug-in is never unloaded (dlclose), since the registries
// and the strategies and models they create run its code; a refused one is.
// Thread-safety: load plug-ins before the registries are shared between
// threads; LoadPlugin itself may be called from one thread at a time.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "base/status.h"
#include "base/version.h"

namespace fedrec {

// The registries a plug-in may extend. Both are non-null when a register
// function is called. New members are only ever added at the end, in a new
// minor version.
struct PluginRegistries {
  StrategyRegistry* strategies = nullptr;
  ModelRegistry* models = nullptr;
};

// The registries a job looks names up in, for programs that register their
// own strategies or models (examples/plugin_model). A null pointer means the
// built-ins.
struct Registries {
  const StrategyRegistry* strategies = nullptr;
  const ModelRegistry* models = nullptr;
};

// A job's own registries: copies of a base (Registries) plus its plug-ins.
struct JobRegistries {
  StrategyRegistry strategies;
  ModelRegistry models;
};

// A fedrec version, as a plug-in reports it.
struct PluginVersion {
  uint32_t major_version = 0;
  uint32_t minor_version = 0;
  uint32_t patch_version = 0;
};

// This fedrec's version.
inline constexpr PluginVersion kFedrecVersion{FEDREC_VERSION_MAJOR, FEDREC_VERSION_MINOR,
                                              FEDREC_VERSION_PATCH};

// The plug-in ABI's symbol names.
inline constexpr char kPluginVersionSymbol[] = "fedrec_plugin_version";
inline constexpr char kPluginRegisterSymbol[] = "fedrec_plugin_register";

// Opens the plug-in at `path` (a file path, made absolute against the working
// directory: never searched on the library path), checks its version, calls
// its register function on empty registries and adds what it registered to
// `registries`. Errors, each naming the path: no such file; the dynamic
// loader's refusal (dlerror); not a plug-in (a symbol missing); built against
// another major.minor; its register function failed or threw; it registered
// nothing; it registered a name already taken (a built-in or an earlier
// plug-in). On error `registries` is unchanged.
// REQUIRES: registries.strategies and registries.models are non-null.
Status LoadPlugin(const std::string& path, const PluginRegistries& registries);

// LoadPlugin for each path in order; stops at the first error.
Status LoadPlugins(const std::vector<std::string>& paths, const PluginRegistries& registries);

// Copies of `base` (the built-ins for a null pointer) with the plug-ins at
// `paths` loaded into them.
Result<JobRegistries> LoadJobRegistries(const std::vector<std::string>& paths,
                                        const Registries& base = {});

namespace plugin_detail {

// Calls a plug-in's register function; an exception becomes an error.
template <typename F>
Status CallRegister(F&& register_function, const PluginRegistries& registries) noexcept {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<F, const PluginRegistries&>>) {
      register_function(registries);
      return Status::Ok();
    } else {
      return register_function(registries);
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("the register function threw: ") + e.what());
  } catch (...) {
    return Status::Internal("the register function threw an exception of unknown type");
  }
}

}  // namespace plugin_detail
}  // namespace fedrec

#define FEDREC_PLUGIN_EXPORT __attribute__((visibility("default")))

// Makes this shared library a fedrec plug-in whose registration is
// `register_function`: Status(const PluginRegistries&) or void(const
// PluginRegistries&). Use once per library, at namespace scope.
#define FEDREC_PLUGIN(register_function)                                             \
  extern "C" FEDREC_PLUGIN_EXPORT ::fedrec::PluginVersion fedrec_plugin_version() {  \
    return {FEDREC_VERSION_MAJOR, FEDREC_VERSION_MINOR, FEDREC_VERSION_PATCH};       \
  }                                                                                  \
  extern "C" FEDREC_PLUGIN_EXPORT void fedrec_plugin_register(                       \
      const ::fedrec::PluginRegistries* registries, ::fedrec::Status* status) {      \
    *status = ::fedrec::plugin_detail::CallRegister(register_function, *registries); \
  }
