// Filter names → factories. Adding a filter is one line in registry.cc.
#pragma once

#include <memory>
#include <string_view>

#include "common/clock.h"
#include "config/config.h"
#include "filters/filter.h"
#include "policy/state_store.h"

namespace cutover {

// Builds the factory for the filter called `name` for a new snapshot of `cfg` (main thread).
// Returns nullptr for "router", which the proxy core builds itself, and for unknown names (the
// loader has already rejected those).
std::unique_ptr<FilterFactory> makeFilterFactory(std::string_view name, const config::Config& cfg,
                                                 StateStore& store, const Clock& clock);

// Whether `name` is a filter this registry builds.
bool isRegisteredFilter(std::string_view name);

}  // namespace cutover
