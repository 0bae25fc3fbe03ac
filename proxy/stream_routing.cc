// The Stream's routing half: which backend takes a request (split, override, failover), whether
// it may (health, breaker, limits), the attempts on its endpoints, and retries with backoff under
// the route's policy and the backend's retry budget. The exchange itself is in stream.cc.
#include <chrono>
#include <string>

#include "filters/backoff.h"
#include "filters/circuit_breaker.h"
#include "filters/health_state.h"
#include "filters/retry_budget.h"
#include "filters/token_bucket.h"
#include "proxy/clock.h"
#include "proxy/downstream_connection.h"
#include "proxy/metrics.h"
#include "proxy/router.h"
#include "proxy/stream.h"
#include "proxy/worker.h"

namespace cutover {

void Stream::route() {
  phase_ = Phase::Routing;
  if (route_ == nullptr) {
    localReply(404, Reason::NoRoute);
    return;
  }
  const config::Config& cfg = *snap_->config;
  int chosen = -1;
  if (!cfg.override_header.empty()) {
    std::string_view v = req_->headers.get(cfg.override_header);
    if (!v.empty()) {
      for (const config::SplitEntry& e : route_->split) {
        if (cfg.backends[e.backend].name == v) chosen = static_cast<int>(e.backend);
      }
    }
  }
  if (chosen < 0) {
    std::string_view key = stickyKey(*route_, *req_, conn_->peer());
    uint32_t bucket = key.empty() ? worker_.rng().below(10000) : stickyBucket(key);
    chosen = static_cast<int>(route_->split[pickSplit(*route_, bucket)].backend);
  }
  uint32_t b = static_cast<uint32_t>(chosen);
  split_backend_ = b;
  int64_t now = monotonicNs();
  Reason why = admitBackend(*snap_, b, now);
  if (why != Reason::None && route_->fallback && *route_->fallback != b) {
    // Failover: the split's choice is open or has no healthy endpoint.
    if (admitBackend(*snap_, *route_->fallback, now) == Reason::None) {
      b = *route_->fallback;
      info_.failover = true;
      why = Reason::None;
    }
  }
  if (why != Reason::None) {
    info_.backend = static_cast<int>(b);
    localReply(503, why);
    return;
  }
  const BackendRuntime& rt = snap_->backends[b];
  if (rt.limiter) {
    TokenBucket::Decision d = rt.limiter->take(now);
    if (!d.allowed) {
      std::string extra = "Retry-After: " + std::to_string(d.retry_after_s) + "\r\n";
      localReply(429, Reason::RateLimited, extra);
      return;
    }
  }
  Reason r = lease_.admit(rt);
  if (r != Reason::None) {
    info_.backend = static_cast<int>(b);
    localReply(503, r);
    return;
  }
  backend_ = b;
  if (req_->expect_continue && !request_complete_) {
    conn_->transport().write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  startAttempt();
}

void Stream::startAttempt() {
  phase_ = Phase::Connecting;
  info_.backend = static_cast<int>(backend_);
  ForwardInfo fwd;
  fwd.client_address = conn_->peer();
  Reason r = upstream_.start(*snap_, backend_, *req_, fwd, lease_);
  if (r == Reason::NoEndpoint) {
    localReply(503, r);
    return;
  }
  ++info_.attempts;
  info_.endpoint = static_cast<int>(upstream_.endpoint());
  if (info_.upstream_start_ns == 0) info_.upstream_start_ns = monotonicNs();
  if (r == Reason::UpstreamConnectFailure) {
    failUpstream(Failure::Connect);
  } else if (r != Reason::None) {
    localReply(503, r);
  }
}

void Stream::recordOutcome(Outcome o, uint16_t status) {
  const BackendRuntime& rt = snap_->backends[backend_];
  if (!rt.breaker) return;
  int64_t now = monotonicNs();
  if (isFailure(rt.breaker->config(), o, status)) {
    rt.breaker->onFailure(now);
  } else {
    rt.breaker->onSuccess(now);
  }
}

bool Stream::retryAfterFailure(Outcome o, uint16_t status,
                               std::optional<config::Duration> retry_after) {
  if (phase_ == Phase::Done || response_started_) return false;
  RetryState::Attempt a;
  a.outcome = o;
  a.status = status;
  a.retry_after = retry_after;
  a.attempts = info_.attempts;
  a.idempotent = req_->idempotent();
  a.body_started = upstream_.bodyStarted();
  if (!retry_.schedule(*snap_, *route_, backend_, a, deadline_ms_ - worker_.nowMs(), lease_)) {
    return false;
  }
  backend_ = retry_.target();
  if (snap_->metrics) {
    snap_->metrics->route(info_.route).retries[snap_->metrics->backendSlot(static_cast<int>(backend_))]
        ->Increment();
  }
  phase_ = Phase::Routing;
  return true;
}

void Stream::onRetryFire(void* ctx) {
  // Backoff over: the next attempt, under the same total deadline.
  auto* self = static_cast<Stream*>(ctx);
  if (self->phase_ != Phase::Routing) return;
  Reason why = admitBackend(*self->snap_, self->backend_, monotonicNs());
  if (why != Reason::None) {
    self->localReply(503, why);
    return;
  }
  self->startAttempt();
}

void Stream::onAttemptFailed(Failure f) { failUpstream(f); }

void Stream::failUpstream(Failure f) {
  upstream_.abandon();
  if (phase_ == Phase::Done) return;
  Outcome o = f == Failure::Connect   ? Outcome::ConnectError
              : f == Failure::Timeout ? Outcome::Timeout
                                      : Outcome::Reset;
  recordOutcome(o, 0);
  if (snap_->metrics) {
    const BackendMetrics& bm = snap_->metrics->backends[backend_];
    if (f == Failure::Connect) {
      bm.connect_failures->Increment();
    } else if (f == Failure::Timeout) {
      bm.timeouts->Increment();
    } else if (f == Failure::Reset) {
      bm.resets->Increment();
    }
  }
  if (response_started_) {
    // Never let a cut-short response look complete: reset the client connection.
    response_close_ = true;
    info_.reason = f == Failure::Timeout ? Reason::UpstreamTimeout : Reason::UpstreamReset;
    finish();
    return;
  }
  if (retryAfterFailure(o, 0, std::nullopt)) return;
  switch (f) {
    case Failure::Connect:
      localReply(502, Reason::UpstreamConnectFailure);
      return;
    case Failure::Timeout:
      localReply(504, Reason::UpstreamTimeout);
      return;
    case Failure::Reset:
      localReply(502, Reason::UpstreamReset);
      return;
    case Failure::BadResponse:
      localReply(502, Reason::BadUpstreamResponse);
      return;
  }
}

}  // namespace cutover
