// A config generation with everything derived from it that requests use: the filter factories,
// per-backend policy state (breakers, budgets, health, limiters: shared across workers and carried
// across reloads through the StateStore), and cached metric children.
//
// The running snapshot is a std::shared_ptr<const Snapshot>. A stream takes it when its request
// head completes and keeps it to the end, so a reload never changes a request in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"

namespace cutover {
class CircuitBreaker;
class ConcurrencyLimits;
class RetryBudget;
class HealthState;
class TokenBucket;
class DnsNudge;
struct SnapshotMetrics;
struct SnapshotStats;
struct SnapshotTlsMetrics;
class TlsServerContext;
class TlsClientContext;
}  // namespace cutover

namespace cutover {

// Shared, thread-safe policy state of one backend (from the StateStore, so it survives reloads
// when its parameters do). Null members are disabled features.
struct BackendRuntime {
  std::shared_ptr<CircuitBreaker> breaker;
  std::shared_ptr<ConcurrencyLimits> limits;
  std::shared_ptr<RetryBudget> budget;
  std::shared_ptr<HealthState> health;
  std::shared_ptr<TokenBucket> limiter;
};

struct Snapshot {
  std::shared_ptr<const config::Config> config;
  uint64_t generation = 0;
  bool rollback = false;          // every route forced to its stable backend (POST /rollback)
  int64_t rollback_since_ms = 0;  // unix time the rollback began
  // Chain before the router, in configured order.
  std::vector<std::unique_ptr<FilterFactory>> filters;
  std::vector<BackendRuntime> backends;            // parallel to config->backends
  std::shared_ptr<const SnapshotMetrics> metrics;  // null = metrics off
  std::shared_ptr<const SnapshotStats> stats;
  // Wakes the DNS resolver when a connect to an address resolved from a name fails (thread-safe).
  std::shared_ptr<DnsNudge> dns_nudge;
  // TLS listeners (proxy/listener_tls.h): contexts by listener index, null for plain ones. A
  // connection keeps the context it was accepted with.
  std::vector<std::shared_ptr<const TlsServerContext>> listener_tls;
  // TLS backends (proxy/backend_tls.h): client contexts by backend index, null for plain ones.
  std::vector<std::shared_ptr<const TlsClientContext>> backend_tls;
  std::shared_ptr<const SnapshotTlsMetrics> tls_metrics;  // null = metrics off
};

}  // namespace cutover
