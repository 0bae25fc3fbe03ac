// A Snapshot built from YAML for proxy unit tests: the config loaded (its errors reported), and per
// backend a retry budget and concurrency limits, plus a breaker and a rate limiter where the config
// has one. No metrics, stats, health or filters.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "config/loader.h"
#include "policy/circuit_breaker.h"
#include "policy/retry_budget.h"
#include "policy/token_bucket.h"
#include "proxy/snapshot.h"

namespace cutover::testing {

inline void loadSnapshot(Snapshot& snap, const std::string& yaml) {
  config::LoadResult r = config::loadString(yaml, "test.yaml");
  for (const auto& e : r.errors) MESSAGE(e.str());
  REQUIRE(r.ok());
  snap.config = r.config;
  snap.backends.resize(r.config->backends.size());
  for (size_t i = 0; i < snap.backends.size(); ++i) {
    BackendRuntime& rt = snap.backends[i];
    const config::CircuitBreaker& cb = r.config->backends[i].circuit_breaker;
    rt.budget = std::make_shared<RetryBudget>();
    rt.limits = std::make_shared<ConcurrencyLimits>(cb);
    if (cb.enabled) rt.breaker = std::make_shared<CircuitBreaker>(cb, 1);
    const auto& limit = r.config->backends[i].rate_limit;
    if (limit) rt.limiter = std::make_shared<TokenBucket>(*limit);
  }
}

// Index of the backend called `name`.
inline uint32_t backendIndex(const Snapshot& snap, const std::string& name) {
  for (size_t i = 0; i < snap.config->backends.size(); ++i) {
    if (snap.config->backends[i].name == name) return static_cast<uint32_t>(i);
  }
  FAIL("no backend " << name);
  return 0;
}

}  // namespace cutover::testing
