// Policy state that outlives a config snapshot: rate-limit buckets, backend limiters, breakers,
// retry budgets, concurrency counters and health state, keyed by name.
//
// Owned by the server. While a new snapshot is built (on the main thread, before it is swapped
// in), the builder asks the store for each object; the store hands back the one it already has
// when the name and the parameters that shape its state are unchanged, so a reload keeps buckets,
// breaker states and health, and otherwise creates a fresh object in its place (the previous one
// lives on in the old snapshot until that is released). The store is mutated only there; a mutex
// makes a stray call from elsewhere safe but not meaningful. The returned objects are thread-safe.
//
// Which parameters are compared:
//   rateLimitTable / backendLimiter  rate, per, burst, key, header, max_keys (not mode or
//                                    response_headers, which do not touch the buckets)
//   breaker                          the whole CircuitBreaker section
//   health                           endpoint list and the whole HealthCheck section
//   retryBudget / concurrency        never replaced: they count requests in flight, which release
//                                    into the same object; concurrency() updates its limits.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "policy/backoff.h"
#include "policy/circuit_breaker.h"
#include "policy/health_state.h"
#include "policy/retry_budget.h"
#include "policy/token_bucket.h"

namespace cutover {

class StateStore {
 public:
  // `seed` derives the seeds of breakers' and health checks' jitter generators.
  explicit StateStore(uint64_t seed);
  StateStore();  // seeded from std::random_device
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Per-key buckets for one limit; `key` names its user, e.g. "route:<route name>".
  std::shared_ptr<BucketTable> rateLimitTable(const std::string& key,
                                              const config::RateLimit& limit);
  // One bucket for a whole backend (Backend::rate_limit); the router calls take(now).allowed.
  std::shared_ptr<TokenBucket> backendLimiter(const std::string& backend,
                                              const config::RateLimit& limit);
  std::shared_ptr<CircuitBreaker> breaker(const std::string& backend,
                                          const config::CircuitBreaker& cfg);
  std::shared_ptr<RetryBudget> retryBudget(const std::string& backend);
  std::shared_ptr<ConcurrencyLimits> concurrency(const std::string& backend,
                                                 const config::CircuitBreaker& cfg);
  std::shared_ptr<HealthState> health(const std::string& backend,
                                      const std::vector<std::string>& endpoints,
                                      const config::HealthCheck& cfg);

  // Forgets every entry not asked for since the previous sweep(). Call after a snapshot has been
  // built and swapped in, so state of removed routes and backends does not pile up; objects still
  // referenced by an old snapshot live until it is released.
  void sweep();
  // Number of entries held (all kinds).
  size_t size() const;

 private:
  template <class T, class Params>
  struct Slot {
    Params params;
    std::shared_ptr<T> object;
    uint64_t generation = 0;
  };
  struct LimitParams {
    BucketParams bucket;
    config::RateLimit::Key key;
    std::string header;
    uint32_t max_keys;
    bool operator==(const LimitParams& o) const;
  };
  struct HealthParams {
    std::vector<std::string> endpoints;
    config::HealthCheck check;
    bool operator==(const HealthParams&) const = default;
  };
  struct NoParams {
    bool operator==(const NoParams&) const = default;
  };
  static LimitParams limitParams(const config::RateLimit& limit);

  template <class T, class Params, class Make>
  std::shared_ptr<T> lookup(std::map<std::string, Slot<T, Params>>& map, const std::string& name,
                            const Params& params, Make make);

  mutable std::mutex mu_;
  Rng seeds_;
  uint64_t generation_ = 1;
  std::map<std::string, Slot<BucketTable, LimitParams>> tables_;
  std::map<std::string, Slot<TokenBucket, LimitParams>> backend_limiters_;
  std::map<std::string, Slot<CircuitBreaker, config::CircuitBreaker>> breakers_;
  std::map<std::string, Slot<RetryBudget, NoParams>> budgets_;
  std::map<std::string, Slot<ConcurrencyLimits, NoParams>> concurrency_;
  std::map<std::string, Slot<HealthState, HealthParams>> health_;
};

}  // namespace cutover
