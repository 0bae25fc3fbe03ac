#include "policy/circuit_breaker.h"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace cutover {

std::string_view breakerStateName(BreakerState s) {
  switch (s) {
    case BreakerState::Closed:
      return "closed";
    case BreakerState::Open:
      return "open";
    case BreakerState::HalfOpen:
      return "half_open";
  }
  return "unknown";
}

bool isFailure(const config::CircuitBreaker& cfg, Outcome outcome, uint16_t status) {
  switch (outcome) {
    case Outcome::Success:
      return false;
    case Outcome::ConnectError:
      return cfg.on_connect_error;
    case Outcome::Timeout:
      return cfg.on_timeout;
    case Outcome::Reset:
      return cfg.on_reset;
    case Outcome::Status:
      if (cfg.on_5xx && status >= 500 && status <= 599) return true;
      return std::find(cfg.on_status.begin(), cfg.on_status.end(), status) != cfg.on_status.end();
  }
  return false;
}

CircuitBreaker::CircuitBreaker(const config::CircuitBreaker& cfg, uint64_t seed)
    : cfg_(cfg),
      cooldown_(cfg.cooldown, cfg.cooldown_multiplier, cfg.max_cooldown, cfg.jitter, seed) {}

void CircuitBreaker::transition(BreakerState to, int64_t now_ns, std::string_view why,
                                Change& change) {
  const BreakerState from = state_;
  state_ = to;
  published_.store(to, std::memory_order_release);
  switch (to) {
    case BreakerState::Open: {
      // A trip from Closed starts the schedule again at the base cool-down; a failed probe grows
      // it.
      if (from == BreakerState::Closed) cooldown_.reset();
      last_cooldown_ = cooldown_.next();
      open_until_ns_ =
          now_ns + std::chrono::duration_cast<std::chrono::nanoseconds>(last_cooldown_).count();
      probes_left_ = 0;
      trips_.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    case BreakerState::HalfOpen:
      probes_left_ = std::max<uint32_t>(1, cfg_.half_open_probes);
      half_open_since_ns_ = now_ns;
      break;
    case BreakerState::Closed:
      cooldown_.reset();
      probes_left_ = 0;
      break;
  }
  consecutive_failures_ = 0;
  has_failures_.store(false, std::memory_order_relaxed);
  change.happened = true;
  change.from = from;
  change.to = to;
  const size_t n = std::min(why.size(), sizeof(change.why) - 1);
  std::memcpy(change.why, why.data(), n);
  change.why[n] = '\0';
}

void CircuitBreaker::maybeHalfOpen(int64_t now_ns, Change& change) {
  if (state_ == BreakerState::Open && now_ns >= open_until_ns_) {
    transition(BreakerState::HalfOpen, now_ns, "cool-down elapsed", change);
  }
}

bool CircuitBreaker::allowRequest(int64_t now_ns) {
  if (!cfg_.enabled) return true;
  // Closed admits everything: no lock on the request path in the common case.
  if (published_.load(std::memory_order_acquire) == BreakerState::Closed) return true;
  Change change;
  Listener listener;
  bool allowed = false;
  {
    std::lock_guard lock(mu_);
    maybeHalfOpen(now_ns, change);
    switch (state_) {
      case BreakerState::Closed:
        allowed = true;
        break;
      case BreakerState::Open:
        allowed = false;
        break;
      case BreakerState::HalfOpen: {
        const int64_t probe_timeout_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.cooldown).count();
        if (probes_left_ == 0 && now_ns - half_open_since_ns_ >= probe_timeout_ns) {
          // Every probe went unanswered for a whole cool-down: send another round.
          probes_left_ = std::max<uint32_t>(1, cfg_.half_open_probes);
          half_open_since_ns_ = now_ns;
        }
        allowed = probes_left_ > 0;
        if (allowed) --probes_left_;
        break;
      }
    }
    if (change.happened) listener = listener_;
  }
  if (listener) listener(change.from, change.to, change.why);
  return allowed;
}

void CircuitBreaker::releaseProbe() {
  if (!cfg_.enabled || published_.load(std::memory_order_acquire) != BreakerState::HalfOpen) return;
  std::lock_guard lock(mu_);
  if (state_ == BreakerState::HalfOpen &&
      probes_left_ < std::max<uint32_t>(1, cfg_.half_open_probes)) {
    ++probes_left_;
  }
}

void CircuitBreaker::onSuccess(int64_t now_ns) {
  if (!cfg_.enabled) return;
  // Closed with no failure counted: nothing to reset, no lock. (A failure racing with this
  // success may keep its count; consecutive counting is approximate across threads anyway.)
  if (published_.load(std::memory_order_acquire) == BreakerState::Closed &&
      !has_failures_.load(std::memory_order_relaxed)) {
    return;
  }
  Change change;
  Listener listener;
  {
    std::lock_guard lock(mu_);
    if (state_ == BreakerState::Closed) {
      consecutive_failures_ = 0;
      has_failures_.store(false, std::memory_order_relaxed);
    } else if (state_ == BreakerState::HalfOpen) {
      transition(BreakerState::Closed, now_ns, "probe succeeded", change);
    }
    if (change.happened) listener = listener_;
  }
  if (listener) listener(change.from, change.to, change.why);
}

void CircuitBreaker::onFailure(int64_t now_ns) {
  if (!cfg_.enabled) return;
  Change change;
  Listener listener;
  {
    std::lock_guard lock(mu_);
    if (state_ == BreakerState::Closed) {
      has_failures_.store(true, std::memory_order_relaxed);
      if (++consecutive_failures_ >= std::max<uint32_t>(1, cfg_.consecutive_failures)) {
        char why[48];
        auto [end, ec] = std::to_chars(why, why + 16, consecutive_failures_);
        (void)ec;
        const std::string_view suffix = " consecutive failures";
        std::memcpy(end, suffix.data(), suffix.size());
        transition(BreakerState::Open, now_ns,
                   std::string_view(why, static_cast<size_t>(end - why) + suffix.size()), change);
      }
    } else if (state_ == BreakerState::HalfOpen) {
      transition(BreakerState::Open, now_ns, "probe failed", change);
    }
    if (change.happened) listener = listener_;
  }
  if (listener) listener(change.from, change.to, change.why);
}

BreakerState CircuitBreaker::state(int64_t now_ns) {
  if (!cfg_.enabled) return BreakerState::Closed;
  Change change;
  Listener listener;
  BreakerState s;
  {
    std::lock_guard lock(mu_);
    maybeHalfOpen(now_ns, change);
    s = state_;
    if (change.happened) listener = listener_;
  }
  if (listener) listener(change.from, change.to, change.why);
  return s;
}

void CircuitBreaker::setListener(Listener listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

config::Duration CircuitBreaker::lastCooldown() const {
  std::lock_guard lock(mu_);
  return last_cooldown_;
}

int64_t CircuitBreaker::openUntilNs() const {
  std::lock_guard lock(mu_);
  return open_until_ns_;
}

void ConcurrencyLimits::setLimits(const config::CircuitBreaker& cfg) {
  max_connections_.store(cfg.max_connections, std::memory_order_relaxed);
  max_pending_.store(cfg.max_pending, std::memory_order_relaxed);
  max_inflight_.store(cfg.max_inflight, std::memory_order_relaxed);
}

Reason ConcurrencyLimits::tryAcquire(std::atomic<uint32_t>& counter,
                                     const std::atomic<uint32_t>& limit, Reason reason) {
  const uint32_t max = limit.load(std::memory_order_relaxed);
  uint32_t current = counter.load(std::memory_order_relaxed);
  do {
    // A compare-and-swap rather than add-then-undo, so a rejected caller never makes another
    // thread see the counter over its limit.
    if (max != 0 && current >= max) return reason;
  } while (!counter.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
  return Reason::None;
}

}  // namespace cutover
