#include "policy/retry_budget.h"

#include <algorithm>
#include <cmath>

namespace cutover {

uint32_t RetryBudget::limit(double ratio, uint32_t min) const {
  const double scaled = std::floor(std::max(0.0, ratio) * activeRequests());
  return std::max(min, static_cast<uint32_t>(std::min(scaled, 4294967295.0)));
}

bool RetryBudget::tryStartRetry(double ratio, uint32_t min) {
  const uint32_t max = limit(ratio, min);
  uint32_t current = active_retries_.load(std::memory_order_relaxed);
  do {
    if (current >= max) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!active_retries_.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
  return true;
}

bool shouldRetry(const config::Retry& policy, Outcome outcome, uint16_t status, bool idempotent,
                 bool body_started, uint32_t attempts_done) {
  if (!policy.enabled || body_started) return false;
  if (attempts_done > policy.attempts) return false;  // the first attempt is not a retry
  if (outcome == Outcome::Status && status == 429) return false;
  bool retryable = false;
  switch (outcome) {
    case Outcome::Success:
      return false;
    case Outcome::ConnectError:
      return policy.on_connect_error;
    case Outcome::Reset:
      retryable = policy.on_reset;
      break;
    case Outcome::Timeout:
      retryable = policy.on_timeout;
      break;
    case Outcome::Status:
      retryable = std::find(policy.on_status.begin(), policy.on_status.end(), status) !=
                  policy.on_status.end();
      break;
  }
  return retryable && (idempotent || !policy.idempotent_only);
}

}  // namespace cutover
