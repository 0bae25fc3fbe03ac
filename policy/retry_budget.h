// Retry policy decisions and the per-backend retry budget.
//
// The budget keeps a failing backend from turning every request into several: concurrent retries
// to a backend may not exceed max(budget_min, budget_ratio × requests in flight to it), 20% with a
// floor of 3 by default. One RetryBudget per backend, shared by every worker, kept across reloads.
#pragma once

#include <atomic>
#include <cstdint>

#include "config/config.h"
#include "policy/circuit_breaker.h"

namespace cutover {

class RetryBudget {
 public:
  RetryBudget() = default;
  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;

  // Bracket every request sent to the backend (its first attempt) ...
  void startRequest() { active_requests_.fetch_add(1, std::memory_order_relaxed); }
  void endRequest() { active_requests_.fetch_sub(1, std::memory_order_relaxed); }
  // ... and every retry attempt. tryStartRetry() counts the retry and returns true when the budget
  // allows it (active retries < max(min, floor(ratio × active requests))), else changes nothing.
  bool tryStartRetry(double ratio, uint32_t min);
  bool tryStartRetry(const config::Retry& policy) {
    return tryStartRetry(policy.budget_ratio, policy.budget_min);
  }
  bool tryStartRetry() { return tryStartRetry(0.2, 3); }
  void endRetry() { active_retries_.fetch_sub(1, std::memory_order_relaxed); }

  // The current limit on concurrent retries.
  uint32_t limit(double ratio, uint32_t min) const;
  uint32_t activeRequests() const { return active_requests_.load(std::memory_order_relaxed); }
  uint32_t activeRetries() const { return active_retries_.load(std::memory_order_relaxed); }
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> active_requests_{0};
  std::atomic<uint32_t> active_retries_{0};
  std::atomic<uint64_t> rejected_{0};
};

// Whether an attempt that ended with `outcome` (`status` for Outcome::Status) may be retried.
//   - never when the policy is disabled, after policy.attempts retries (attempts_done counts the
//     attempts already made, 1 after the first), on 429, or once request body bytes were sent
//     (body_started: they cannot be replayed);
//   - connect errors per on_connect_error, for any method: nothing reached the backend;
//   - resets, timeouts and listed statuses per their settings, and then only for idempotent
//     methods when idempotent_only, else for any request.
bool shouldRetry(const config::Retry& policy, Outcome outcome, uint16_t status, bool idempotent,
                 bool body_started, uint32_t attempts_done);

}  // namespace cutover
