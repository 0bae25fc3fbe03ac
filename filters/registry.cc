#include "filters/registry.h"

#include "filters/rate_limit.h"
#include "filters/request_id.h"

namespace cutover {

namespace {

using MakeFn = std::unique_ptr<FilterFactory> (*)(const config::Config&, StateStore&, const Clock&);
struct Registered {
  std::string_view name;
  MakeFn make;
};

constexpr Registered kFilters[] = {
    {"request_id", &RequestIdFactory::make},
    {"rate_limit", &RateLimitFactory::make},
};

// The registry builds every filter config::kFilterNames lists, except the core's router.
constexpr bool coversConfigNames() {
  size_t matched = 0;
  for (std::string_view name : config::kFilterNames) {
    bool found = name == "router";
    for (const Registered& f : kFilters) found = found || f.name == name;
    if (!found) return false;
    ++matched;
  }
  return matched == std::size(kFilters) + 1;
}
static_assert(coversConfigNames(), "filters/registry.cc and config::kFilterNames disagree");

}  // namespace

std::unique_ptr<FilterFactory> makeFilterFactory(std::string_view name, const config::Config& cfg,
                                                 StateStore& store, const Clock& clock) {
  for (const Registered& f : kFilters) {
    if (f.name == name) return f.make(cfg, store, clock);
  }
  return nullptr;
}

bool isRegisteredFilter(std::string_view name) {
  for (const Registered& f : kFilters) {
    if (f.name == name) return true;
  }
  return false;
}

}  // namespace cutover
