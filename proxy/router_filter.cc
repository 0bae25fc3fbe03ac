#include "proxy/router_filter.h"

#include <chrono>
#include <string>

#include "common/clock.h"
#include "http/http1_writer.h"
#include "policy/circuit_breaker.h"
#include "policy/token_bucket.h"
#include "proxy/dns_resolver.h"
#include "proxy/metrics.h"
#include "proxy/router.h"
#include "proxy/stats.h"

namespace cutover {

Router::Router(uv_loop_t* loop, FastRng& rng, RouterCallbacks& cb)
    : loop_(loop), rng_(rng), cb_(cb), retry_(loop, onRetryFire, this) {}

void Router::reset() {
  abandon();
  lease_ = BackendLease();  // gives back every slot this request held
  upstream_->reset();
  snap_ = nullptr;
  route_ = nullptr;
  req_ = nullptr;
  info_ = nullptr;
  client_address_ = {};
  fwd_ = {};
  if (body_buf_.capacity() > 64 * 1024) {
    std::string().swap(body_buf_);
  } else {
    body_buf_.clear();
  }
  backend_ = 0;
  state_ = State::Idle;
}

void Router::endAttempt(AttemptOutcome o) {
  if (!attempt_open_) return;
  attempt_open_ = false;
  if (snap_ == nullptr || info_ == nullptr) return;
  if (snap_->metrics) snap_->metrics->recordAttempt(info_->route, backend_, o);
  if (snap_->stats && o != AttemptOutcome::Cancelled) {
    snap_->stats->recordAttempt(info_->route, backend_, o < AttemptOutcome::Status5xx);
  }
}

void Router::abandon(AttemptOutcome why) {
  retry_.cancel();
  endAttempt(why);
  upstream_->abandon();
  if (state_ != State::Idle) state_ = State::Done;
}

void Router::localReply(int status, Reason reason, std::string_view extra) {
  abandon();
  cb_.routerLocalReply(status, reason, extra);
}

void Router::unadmit(const Snapshot& snap, uint32_t b) {
  if (snap.backends[b].breaker) snap.backends[b].breaker->releaseProbe();
}

bool Router::takeBackendLimit(const Snapshot& snap, uint32_t b, int64_t now, StreamInfo& info,
                              uint32_t& retry_after_s) {
  const BackendRuntime& rt = snap.backends[b];
  if (!rt.limiter) return true;
  TokenBucket::Decision d = rt.limiter->take(now);
  if (d.allowed) return true;
  const auto& limit = snap.config->backends[b].rate_limit;
  if (limit && limit->mode == config::RateLimit::Mode::DryRun) {
    // Counted (cutover_rate_limit_dry_run_total, the access line's flag), never refused.
    info.rate_limited_dry_run = true;
    return true;
  }
  retry_after_s = d.retry_after_s;
  return false;
}

void Router::start(const config::Route* route, RequestHead& req, StreamInfo& info,
                   std::string_view client_address, const ForwardInfo& fwd, int64_t deadline_ms) {
  const Snapshot& snap = *snap_;
  route_ = route;
  req_ = &req;
  info_ = &info;
  client_address_ = client_address;
  fwd_ = fwd;
  deadline_ms_ = deadline_ms;
  state_ = State::Connecting;
  if (route_ == nullptr) {
    localReply(404, Reason::NoRoute);
    return;
  }
  const config::Config& cfg = *snap_->config;
  int chosen = -1;
  if (!cfg.override_header.empty()) {
    std::string_view v = req.headers.get(cfg.override_header);
    if (!v.empty()) {
      for (const config::SplitEntry& e : route_->split) {
        if (cfg.backends[e.backend].name == v) chosen = static_cast<int>(e.backend);
      }
    }
    // A rollback took every backend but the stable one out: a tester's header cannot bring one
    // back. Ignored (the split decides) and counted.
    if (chosen >= 0 && snap.rollback && route_->stable &&
        static_cast<uint32_t>(chosen) != *route_->stable) {
      chosen = -1;
      info.override_refused = true;
      if (snap.metrics) snap.metrics->override_refused->Increment();
    }
  }
  if (chosen < 0) {
    std::string_view key = stickyKey(*route_, req, client_address_);
    char minted[16];
    if (key.empty() && route_->sticky.insert) {
      // A first visit: a random key decides the bucket, and the cookie keeps it for the next
      // requests (the bucket is the key's hash, so the monotonic rule holds for these users too).
      static constexpr char kHex[] = "0123456789abcdef";
      uint64_t r = rng_.next();
      for (char& c : minted) {
        c = kHex[r & 0xf];
        r >>= 4;
      }
      key = std::string_view(minted, sizeof minted);
      cb_.appendResponseHeader("Set-Cookie", stickyCookie(route_->sticky, key, fwd_.proto));
    }
    uint32_t bucket = key.empty() ? rng_.below(10000) : stickyBucket(key);
    chosen = static_cast<int>(route_->split[pickSplit(*route_, bucket)].backend);
  }
  uint32_t b = static_cast<uint32_t>(chosen);
  const uint32_t split_choice = b;
  int64_t now = monotonicNs();
  Reason why = admitBackend(snap, b, now);
  // During a rollback only the stable backend serves, so no failover away from it.
  const bool may_fail_over = route_->fallback && !(snap.rollback && route_->stable &&
                                                   *route_->fallback != *route_->stable);
  if (why != Reason::None && may_fail_over && *route_->fallback != b) {
    // Failover: the split's choice is open or has no healthy endpoint.
    if (admitBackend(snap, *route_->fallback, now) == Reason::None) {
      b = *route_->fallback;
      why = Reason::None;
    }
  }
  if (why != Reason::None) {
    info.backend = static_cast<int>(b);
    localReply(503, why);
    return;
  }
  // The backend's own rate limit. Over it, the request goes to the route's fallback when that one
  // is admitted and has room (a promoted new: 50/s must not turn users away while legacy can
  // serve them), else 429. A backend admitted but then not used gives its half-open probe back.
  uint32_t retry_after_s = 0;
  if (!takeBackendLimit(snap, b, now, info, retry_after_s)) {
    const uint32_t fb = may_fail_over ? *route_->fallback : b;
    uint32_t unused = 0;
    bool moved = false;
    if (fb != b && admitBackend(snap, fb, now) == Reason::None) {
      moved = takeBackendLimit(snap, fb, now, info, unused);
      if (!moved) unadmit(snap, fb);
    }
    unadmit(snap, b);
    if (!moved) {
      info.backend = static_cast<int>(b);
      std::string extra = "Retry-After: " + std::to_string(retry_after_s) + "\r\n";
      localReply(429, Reason::RateLimited, extra);
      return;
    }
    b = fb;
  }
  const BackendRuntime& rt = snap.backends[b];
  Reason r = lease_.admit(rt);
  if (r != Reason::None) {
    unadmit(snap, b);
    info.backend = static_cast<int>(b);
    localReply(503, r);
    return;
  }
  if (b != split_choice) {
    // Counted once the request is placed (a failover that ends in a refusal is not one).
    if (snap.metrics) snap.metrics->recordFailover(info.route, split_choice, b);
    info.failover = true;
  }
  backend_ = b;
  if (req.expect_continue && !cb_.requestComplete()) {
    cb_.writeToClient(k100Continue);
  }
  startAttempt();
}

void Router::startAttempt() {
  state_ = State::Connecting;
  info_->backend = static_cast<int>(backend_);
  Reason r = upstream_->start(*snap_, backend_, *req_, fwd_, lease_);
  if (r == Reason::NoEndpoint) {
    localReply(503, r);
    return;
  }
  // Under way, or a connect that failed at once: an attempt. A limit refusal is not one.
  attempt_open_ = r == Reason::None || r == Reason::UpstreamConnectFailure;
  attempt_status_ = 0;
  ++info_->attempts;
  info_->endpoint = static_cast<int>(upstream_->endpoint());
  if (info_->upstream_start_ns == 0) info_->upstream_start_ns = monotonicNs();
  if (r == Reason::UpstreamConnectFailure) {
    failUpstream(Failure::Connect);
  } else if (r != Reason::None) {
    localReply(503, r);
  }
}

// ---- request body ---------------------------------------------------------------------------

void Router::onRequestBody(const char* data, size_t len) {
  switch (state_) {
    case State::Sending:
    case State::Responding:
      upstream_->sendBody(data, len);
      return;
    case State::Idle:
    case State::Connecting:
    case State::Backoff:
      // Held until an attempt is sending; bounded by the high watermark.
      body_buf_.append(data, len);
      if (snap_ != nullptr && body_buf_.size() > snap_->config->limits.high_watermark) {
        cb_.pauseClient();
      }
      return;
    case State::Done:
      return;  // answered locally: the rest of the body is discarded
  }
}

void Router::onRequestComplete() {
  if (state_ == State::Sending || state_ == State::Responding) upstream_->endBody();
}

std::string& Router::onAttemptSending() {
  state_ = State::Sending;
  return body_buf_;
}

// ---- answers and failures -------------------------------------------------------------------

void Router::recordOutcome(Outcome o, uint16_t status) {
  const BackendRuntime& rt = snap_->backends[backend_];
  if (!rt.breaker) return;
  int64_t now = monotonicNs();
  if (isFailure(rt.breaker->config(), o, status)) {
    rt.breaker->onFailure(now);
  } else {
    rt.breaker->onSuccess(now);
  }
}

void Router::onAttemptHead(ResponseHead& head) {
  info_->upstream_headers_ns = monotonicNs();
  attempt_status_ = head.status;
  recordOutcome(Outcome::Status, head.status);
  if (route_->retry.enabled) {
    std::optional<config::Duration> retry_after;
    std::string_view ra = head.headers.get("retry-after");
    if (!ra.empty() && ra.size() < 6 &&
        ra.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_after = std::chrono::seconds(std::stoi(std::string(ra)));
    }
    if (retryAfterFailure(Outcome::Status, head.status, retry_after)) {
      // Drop this answer with its connection; the retry timer is running.
      upstream_->abandon();
      return;
    }
  }
  if (head.status == 101 && !req_->upgrade) {
    failUpstream(Failure::BadResponse);  // a tunnel nobody asked for
    return;
  }
  // A tunnel ends when either side closes, which may be hours away: its attempt ends here.
  if (head.status == 101) endAttempt(AttemptOutcome::Status1xx);
  state_ = State::Responding;
  cb_.routerHead(head);
}

void Router::onAttemptComplete() {
  endAttempt(attemptOutcomeForStatus(attempt_status_));
  state_ = State::Done;
  cb_.routerComplete();
}

void Router::onAttemptTunnelData(const char* data, size_t len) {
  info_->bytes_out += len;
  cb_.writeToClient(std::string_view(data, len));
}

bool Router::retryAfterFailure(Outcome o, uint16_t status,
                               std::optional<config::Duration> retry_after) {
  if (state_ == State::Done || state_ == State::Idle || cb_.responseStarted()) return false;
  RetryState::Attempt a;
  a.outcome = o;
  a.status = status;
  a.retry_after = retry_after;
  a.attempts = info_->attempts;
  a.idempotent = req_->idempotent();
  a.body_started = upstream_->bodyStarted();
  if (!retry_.schedule(*snap_, *route_, backend_, a,
                       deadline_ms_ - static_cast<int64_t>(uv_now(loop_)), lease_)) {
    if (retry_.budgetRefused()) {
      // Said out loud: a failure the policy would have retried reaches the client.
      info_->retry_refused = true;
      if (snap_->metrics) {
        snap_->metrics->route(info_->route)
            .retries_refused[snap_->metrics->backendSlot(static_cast<int>(retry_.target()))]
            ->Increment();
      }
    }
    return false;
  }
  // The retried attempt ends here (a failure already ended it in failUpstream).
  endAttempt(attemptOutcomeForStatus(attempt_status_));
  if (snap_->metrics && retry_.target() != backend_) {
    snap_->metrics->recordFailover(info_->route, backend_, retry_.target());
  }
  backend_ = retry_.target();
  if (snap_->metrics) {
    snap_->metrics->route(info_->route)
        .retries[snap_->metrics->backendSlot(static_cast<int>(backend_))]
        ->Increment();
  }
  state_ = State::Backoff;
  return true;
}

void Router::onRetryFire(void* ctx) {
  // Backoff over: the next attempt, under the same total deadline.
  auto* self = static_cast<Router*>(ctx);
  if (self->state_ != State::Backoff) return;
  Reason why = admitBackend(*self->snap_, self->backend_, monotonicNs());
  if (why != Reason::None) {
    self->localReply(503, why);
    return;
  }
  self->startAttempt();
}

void Router::failUpstream(Failure f) {
  // A certificate that does not verify is a connect failure with a reason of its own.
  const bool tls_verify = f == Failure::TlsVerify;
  if (tls_verify) f = Failure::Connect;
  endAttempt(f == Failure::Connect       ? AttemptOutcome::ConnectError
             : f == Failure::Timeout     ? AttemptOutcome::Timeout
             : f == Failure::BadResponse ? AttemptOutcome::BadResponse
                                         : AttemptOutcome::Reset);
  upstream_->abandon();
  if (state_ == State::Done || state_ == State::Idle) return;
  Outcome o = f == Failure::Connect   ? Outcome::ConnectError
              : f == Failure::Timeout ? Outcome::Timeout
                                      : Outcome::Reset;
  recordOutcome(o, 0);
  if (f == Failure::Connect && snap_->dns_nudge) {
    // An address resolved from a DNS name that refuses connects may be gone: look it up early.
    snap_->dns_nudge->connectFailed(*snap_->config, backend_, upstream_->endpoint());
  }
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
  if (cb_.responseStarted()) {
    // Never let a cut-short response look complete: the client connection is reset.
    state_ = State::Done;
    cb_.routerResponseCut(f == Failure::Timeout ? Reason::UpstreamTimeout : Reason::UpstreamReset);
    return;
  }
  if (retryAfterFailure(o, 0, std::nullopt)) return;
  switch (f) {
    case Failure::Connect:
      localReply(502,
                 tls_verify ? Reason::UpstreamTlsVerifyFailed : Reason::UpstreamConnectFailure);
      return;
    case Failure::Timeout:
      localReply(504, Reason::UpstreamTimeout);
      return;
    case Failure::Reset:
      localReply(502, Reason::UpstreamReset);
      return;
    case Failure::BadResponse:
    case Failure::TlsVerify:
      localReply(502, Reason::BadUpstreamResponse);
      return;
  }
}

}  // namespace cutover
