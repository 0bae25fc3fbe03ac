// Comparing and rewriting configs for reloads and rollback: pure functions over config::Config.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace cutover {

// Weights of every route as one comparable string ("kibana:new=10,legacy=90,;...").
std::string weightSignature(const config::Config& cfg);
// Human-readable differences between two configs, for the reload log line:
// "route kibana: new 10% -> 25%", "backend new: endpoints ...", "listener admin2: ... added".
std::vector<std::string> describeChanges(const config::Config& from, const config::Config& to);
// A copy of `cfg` with every route sending 100% to its stable backend (config::Route::stable,
// added to the split when absent); a route without one (a single backend) is left as it is.
std::shared_ptr<const config::Config> withRollback(const config::Config& cfg);

}  // namespace cutover
