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
  const config::Config& cfg = *snap_->config;
  const config::Backend& be = cfg.backends[backend_];
  const BackendRuntime& rt = snap_->backends[backend_];
  info_.backend = static_cast<int>(backend_);
  uint32_t n = static_cast<uint32_t>(be.endpoints.size());
  if (n == 0) {
    localReply(503, Reason::NoEndpoint);
    return;
  }
  uint32_t e = worker_.nextEndpoint(backend_, n);
  if (rt.health) {
    // Round-robin over the endpoints health checks consider up.
    uint32_t k = 0;
    while (k < n && !rt.health->healthy(e)) {
      e = (e + 1) % n;
      ++k;
    }
    if (k == n) {
      localReply(503, Reason::NoEndpoint);
      return;
    }
  }
  ++info_.attempts;
  endpoint_ = e;
  info_.endpoint = static_cast<int>(endpoint_);
  if (info_.upstream_start_ns == 0) info_.upstream_start_ns = monotonicNs();
  UpstreamPool& pool = worker_.pool(*snap_, backend_, endpoint_);
  if (!force_fresh_) {
    if (UpstreamConnection* idle = pool.takeIdle()) {
      up_ = idle;
      up_->attach(this);
      sendRequestHead();
      return;
    }
  }
  force_fresh_ = false;
  if (rt.limits) {
    Reason r = rt.limits->tryAcquireConnection();
    if (r != Reason::None) {
      localReply(503, r);
      return;
    }
    r = lease_.acquirePending(rt);
    if (r != Reason::None) {
      rt.limits->releaseConnection();
      localReply(503, r);
      return;
    }
  }
  up_ = pool.create();
  up_->holdConnectionSlot(rt.limits);
  int rc = up_->connect(this, static_cast<uint32_t>(cfg.timeouts.connect.count()));
  if (rc != 0) {
    up_->close();
    up_ = nullptr;
    failUpstream(Failure::Connect);
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
  a.body_started = body_started_;
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

void Stream::onUpstreamFailure(Failure f, int) {
  // A pooled connection the backend had already closed: retry once on a fresh connection if
  // nothing of the answer came back and no body byte went out.
  bool dead_pooled = up_ != nullptr && up_->reused() && !up_->receivedBytes() &&
                     f == Failure::Reset && !body_started_ && !fresh_retry_used_;
  up_ = nullptr;  // the connection closed itself
  if (dead_pooled && !response_started_ && phase_ != Phase::Done) {
    fresh_retry_used_ = true;
    force_fresh_ = true;
    --info_.attempts;
    startAttempt();
    return;
  }
  failUpstream(f);
}

void Stream::failUpstream(Failure f) {
  lease_.releasePending();
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
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
