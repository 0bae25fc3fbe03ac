#include "proxy/backend_lease.h"

#include <utility>

#include "policy/circuit_breaker.h"
#include "policy/retry_budget.h"
#include "proxy/snapshot.h"

namespace cutover {

BackendLease& BackendLease::operator=(BackendLease&& o) noexcept {
  if (this != &o) {
    releaseAll();
    inflight_ = std::exchange(o.inflight_, nullptr);
    budget_ = std::exchange(o.budget_, nullptr);
    pending_ = std::exchange(o.pending_, nullptr);
    retry_ = std::exchange(o.retry_, nullptr);
  }
  return *this;
}

Reason BackendLease::admit(const BackendRuntime& rt) {
  if (rt.limits) {
    Reason r = rt.limits->tryAcquireInflight();
    if (r != Reason::None) return r;
    inflight_ = rt.limits.get();
  }
  if (rt.budget) {
    rt.budget->startRequest();
    budget_ = rt.budget.get();
  }
  return Reason::None;
}

Reason BackendLease::acquirePending(const BackendRuntime& rt) {
  releasePending();
  if (!rt.limits) return Reason::None;
  Reason r = rt.limits->tryAcquirePending();
  if (r == Reason::None) pending_ = rt.limits.get();
  return r;
}

void BackendLease::releasePending() {
  if (pending_ != nullptr) std::exchange(pending_, nullptr)->releasePending();
}

bool BackendLease::tryStartRetry(const BackendRuntime& rt, const config::Retry& policy) {
  endRetry();
  if (!rt.budget) return true;
  if (!rt.budget->tryStartRetry(policy)) return false;
  retry_ = rt.budget.get();
  return true;
}

void BackendLease::endRetry() {
  if (retry_ != nullptr) std::exchange(retry_, nullptr)->endRetry();
}

void BackendLease::releaseAll() {
  releasePending();
  endRetry();
  if (inflight_ != nullptr) std::exchange(inflight_, nullptr)->releaseInflight();
  if (budget_ != nullptr) std::exchange(budget_, nullptr)->endRequest();
}

}  // namespace cutover
