// The retry policy of one request: whether a failed attempt is tried again, on which backend and
// after which backoff, within the route's policy, the target's retry budget (a slot held in the
// request's BackendLease) and the request's deadline. It owns its backoff timer, so the stream's
// own timer is only ever the deadline.
//
// Lifecycle: constructed once per pooled stream (the timer is initialised then), reused across
// requests (cancel() between them), and closed once with close(); the owner is freed only after
// the timer's close callback ran.
#pragma once

#include <uv.h>

#include <cstdint>
#include <optional>

#include "config/config.h"
#include "policy/circuit_breaker.h"
#include "proxy/backend_lease.h"
#include "proxy/snapshot.h"

namespace cutover {

// Whether backend `b` may take a request now: Reason::None, or why not (no endpoint, none
// healthy, breaker open).
Reason admitBackend(const Snapshot& snap, uint32_t b, int64_t now_ns);

class RetryState {
 public:
  // Called from the loop when the backoff is over: start the next attempt on target().
  using Fire = void (*)(void* ctx);

  RetryState(uv_loop_t* loop, Fire fire, void* ctx);
  RetryState(const RetryState&) = delete;
  RetryState& operator=(const RetryState&) = delete;
  // Closes the timer; `closed(handle)` runs from the loop afterwards, with handle->data = `data`.
  void close(uv_close_cb closed, void* data);

  // What the failed attempt was.
  struct Attempt {
    Outcome outcome = Outcome::Status;
    uint16_t status = 0;  // for Outcome::Status
    std::optional<config::Duration> retry_after;
    uint32_t attempts = 0;  // attempts made so far, this one included
    bool idempotent = false;
    bool body_started = false;  // request body bytes went out: they cannot be replayed
  };

  // If `a` may be retried: picks the backend (the same one, or with retry_on_other_backend the
  // other side of the split, else the fallback), takes a retry slot on it through `lease`, arms the
  // backoff timer and returns true. The backoff must end before `time_left_ms`. Otherwise
  // changes nothing and returns false.
  bool schedule(const Snapshot& snap, const config::Route& route, uint32_t backend,
                const Attempt& a, int64_t time_left_ms, BackendLease& lease);
  // After schedule() returned false: whether it was the target's retry budget that refused a
  // retry the policy allowed (target() then names that backend).
  bool budgetRefused() const { return budget_refused_; }
  // Stops a pending backoff (the request ended).
  void cancel();
  bool pending() const { return pending_; }
  uint32_t target() const { return target_; }

 private:
  static void onTimer(uv_timer_t* t);

  uv_timer_t timer_{};
  Fire fire_;
  void* ctx_;
  uint32_t target_ = 0;
  bool pending_ = false;
  bool budget_refused_ = false;
};

}  // namespace cutover
