// Active health-check bookkeeping for one backend's endpoints, shared by every worker.
//
// The health checker (one libuv timer per endpoint, written with the proxy core) reports each
// check with onCheckResult() and asks nextDelay() when to check again; workers ask healthy() on
// every pick, which is a single atomic load. An endpoint starts healthy (traffic flows before the
// first check), turns unhealthy after unhealthy_threshold consecutive failed checks (3) and healthy
// again after healthy_threshold consecutive passes (2). Scheduling: the normal interval while
// checks pass; after a failed check, a growing delay (backoff_base × 1.5 up to backoff_max, ±20%
// jitter: 1 s, 1.5 s, 2.25 s … 30 s), back to the normal interval as soon as a check passes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "config/config.h"
#include "policy/backoff.h"

namespace cutover {

class HealthState {
 public:
  HealthState(size_t endpoints, const config::HealthCheck& cfg, uint64_t seed);
  HealthState(const HealthState&) = delete;
  HealthState& operator=(const HealthState&) = delete;

  // Records one check of `endpoint`. Returns true when this flipped its health (the caller logs
  // and counts it). Thread-safe.
  bool onCheckResult(size_t endpoint, bool pass, int64_t now_ns);
  // Lock-free. Always true when health checking is disabled; false for an out-of-range index.
  bool healthy(size_t endpoint) const;
  // How long to wait before checking `endpoint` again.
  config::Duration nextDelay(size_t endpoint);

  size_t size() const { return count_; }
  size_t healthyCount() const;
  bool anyHealthy() const { return healthyCount() > 0; }
  // When `endpoint`'s health last changed (0 = never).
  int64_t lastChangeNs(size_t endpoint) const;
  const config::HealthCheck& config() const { return cfg_; }

 private:
  struct Endpoint {
    std::atomic<bool> healthy{true};
    uint32_t passes = 0;  // consecutive; guarded by mu_
    uint32_t fails = 0;
    bool last_failed = false;
    int64_t last_change_ns = 0;
    std::optional<GrowingBackoff> backoff;
  };

  const config::HealthCheck cfg_;
  const size_t count_;
  mutable std::mutex mu_;  // the counters and backoffs; never held by healthy()
  std::unique_ptr<Endpoint[]> endpoints_;
};

}  // namespace cutover
