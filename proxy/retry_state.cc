#include "proxy/retry_state.h"

#include "common/clock.h"
#include "policy/backoff.h"
#include "policy/health_state.h"
#include "policy/retry_budget.h"
#include "proxy/metrics.h"

namespace cutover {

Reason admitBackend(const Snapshot& snap, uint32_t b, int64_t now_ns) {
  const BackendRuntime& rt = snap.backends[b];
  if (snap.config->backends[b].endpoints.empty()) return Reason::NoEndpoint;
  if (rt.health && !rt.health->anyHealthy()) return Reason::NoEndpoint;
  if (rt.breaker && !rt.breaker->allowRequest(now_ns)) return Reason::CircuitOpen;
  return Reason::None;
}

RetryState::RetryState(uv_loop_t* loop, Fire fire, void* ctx) : fire_(fire), ctx_(ctx) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void RetryState::close(uv_close_cb closed, void* data) {
  pending_ = false;
  timer_.data = data;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), closed);
}

bool RetryState::schedule(const Snapshot& snap, const config::Route& route, uint32_t backend,
                          const Attempt& a, int64_t time_left_ms, BackendLease& lease) {
  const config::Retry& policy = route.retry;
  budget_refused_ = false;
  if (!shouldRetry(policy, a.outcome, a.status, a.idempotent, a.body_started, a.attempts)) {
    return false;
  }
  uint32_t target = backend;
  if (policy.retry_on_other_backend) {
    // The other side of the split (e.g. new failed → legacy), else the fallback.
    int64_t now = monotonicNs();
    bool found = false;
    for (const config::SplitEntry& e : route.split) {
      if (e.backend != backend && admitBackend(snap, e.backend, now) == Reason::None) {
        target = e.backend;
        found = true;
        break;
      }
    }
    if (!found && route.fallback && *route.fallback != backend) target = *route.fallback;
  }
  // During a rollback only the stable backend serves: retries stay on it.
  if (snap.rollback && route.stable) target = *route.stable;
  // A retry storm is refused by the target's budget.
  if (!lease.tryStartRetry(snap.backends[target], policy)) {
    target_ = target;
    budget_refused_ = true;
    return false;
  }
  config::Duration delay = retryDelay(a.attempts - 1, policy, a.retry_after, threadRng());
  if (delay.count() >= time_left_ms) {
    lease.endRetry();
    return false;
  }
  target_ = target;
  pending_ = true;
  uv_timer_start(&timer_, onTimer, static_cast<uint64_t>(delay.count()), 0);
  return true;
}

void RetryState::cancel() {
  if (!pending_) return;
  pending_ = false;
  uv_timer_stop(&timer_);
}

void RetryState::onTimer(uv_timer_t* t) {
  auto* self = static_cast<RetryState*>(t->data);
  self->pending_ = false;
  self->fire_(self->ctx_);
}

}  // namespace cutover
