// Per-backend circuit breaker and concurrency limits, shared by every worker thread.
//
//              N consecutive failures
//   Closed ──────────────────────────────► Open ◄────────────────┐
//     ▲                                      │                    │ a probe failed
//     │                                      │ cool-down over     │ (cool-down × multiplier,
//     │  a probe succeeded                   ▼                    │  capped, ±jitter)
//     └───────────────────────────────── HalfOpen ────────────────┘
//        (cool-down back to base)        (admits up to K probes)
//
// Every state change goes through one function, transition(), which records the reason; the
// listener hears about it after the lock is released. Cool-downs come from a GrowingBackoff
// (base × multiplier^n, capped, ±jitter) seeded explicitly, so tests replay exact schedules.
//
// Callers report every admitted request's outcome with onSuccess() or onFailure(). A probe whose
// outcome is never reported (the client went away) does not wedge the breaker: once HalfOpen has
// waited a whole base cool-down without an answer, it admits a fresh round of probes. Outcomes
// reported while Open come from requests admitted before it opened and are ignored.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>

#include "common/reason.h"
#include "config/config.h"
#include "policy/backoff.h"

namespace cutover {

enum class BreakerState : uint8_t { Closed, Open, HalfOpen };
std::string_view breakerStateName(BreakerState s);  // "closed", "open", "half_open"

// How one upstream attempt ended. Status: a response head arrived with the given status code.
enum class Outcome : uint8_t { Success, ConnectError, Timeout, Reset, Status };

// Whether `outcome` (and `status`, for Outcome::Status) counts as a failure under `cfg`:
// connect errors, timeouts and resets per their flags; 5xx when on_5xx; any code in on_status.
bool isFailure(const config::CircuitBreaker& cfg, Outcome outcome, uint16_t status = 0);

class CircuitBreaker {
 public:
  // Called after each state change, outside the breaker's lock, possibly from any worker thread.
  // `why` is valid only during the call.
  using Listener = std::function<void(BreakerState from, BreakerState to, std::string_view why)>;

  CircuitBreaker(const config::CircuitBreaker& cfg, uint64_t seed);
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // Closed: true. Open: false until the cool-down has elapsed, then HalfOpen. HalfOpen: true for
  // up to half_open_probes requests, false after. Always true when the breaker is disabled.
  bool allowRequest(int64_t now_ns);
  // A request allowRequest admitted was not sent after all (it went to another backend, or was
  // refused by a later check): in HalfOpen its probe is given back, so recovery is not delayed.
  void releaseProbe();
  void onSuccess(int64_t now_ns);
  void onFailure(int64_t now_ns);
  // Current state; an Open breaker whose cool-down has elapsed becomes HalfOpen here too.
  BreakerState state(int64_t now_ns);

  // Replaces the listener (thread-safe; takes effect for the next transition).
  void setListener(Listener listener);

  uint64_t trips() const { return trips_.load(std::memory_order_relaxed); }  // → Open, any cause
  // The cool-down of the current (or last) Open period, jitter included.
  config::Duration lastCooldown() const;
  // When the current Open period ends (meaningful in Open).
  int64_t openUntilNs() const;
  const config::CircuitBreaker& config() const { return cfg_; }

 private:
  struct Change {
    bool happened = false;
    BreakerState from = BreakerState::Closed;
    BreakerState to = BreakerState::Closed;
    char why[64] = {};
  };

  // The one place the state changes. Called with mu_ held; fills `change` for the listener.
  void transition(BreakerState to, int64_t now_ns, std::string_view why, Change& change);
  // Open → HalfOpen when the cool-down is over. mu_ held.
  void maybeHalfOpen(int64_t now_ns, Change& change);

  const config::CircuitBreaker cfg_;
  mutable std::mutex mu_;
  BreakerState state_ = BreakerState::Closed;
  // Mirrors of state_ and "consecutive_failures_ > 0" for the lock-free fast paths; written under
  // mu_.
  std::atomic<BreakerState> published_{BreakerState::Closed};
  std::atomic<bool> has_failures_{false};
  uint32_t consecutive_failures_ = 0;
  int64_t open_until_ns_ = 0;
  int64_t half_open_since_ns_ = 0;
  uint32_t probes_left_ = 0;
  config::Duration last_cooldown_{0};
  GrowingBackoff cooldown_;
  Listener listener_;
  std::atomic<uint64_t> trips_{0};
};

// Per-backend counters for the breaker's concurrency limits, shared by every worker. Each
// tryAcquire*() either counts one more and returns Reason::None, or changes nothing and returns
// the limit that was hit (Reason::MaxConnections / MaxPending / MaxInflight), which the caller
// answers with a 503 carrying that reason. Limits of 0 mean unlimited and may be changed at any
// time (a reload): the counters themselves are never reset, because requests in flight release
// what they acquired.
class ConcurrencyLimits {
 public:
  ConcurrencyLimits() = default;
  explicit ConcurrencyLimits(const config::CircuitBreaker& cfg) { setLimits(cfg); }
  ConcurrencyLimits(const ConcurrencyLimits&) = delete;
  ConcurrencyLimits& operator=(const ConcurrencyLimits&) = delete;

  void setLimits(const config::CircuitBreaker& cfg);

  Reason tryAcquireConnection() {
    return tryAcquire(connections_, max_connections_, Reason::MaxConnections);
  }
  void releaseConnection() { connections_.fetch_sub(1, std::memory_order_relaxed); }
  Reason tryAcquirePending() { return tryAcquire(pending_, max_pending_, Reason::MaxPending); }
  void releasePending() { pending_.fetch_sub(1, std::memory_order_relaxed); }
  Reason tryAcquireInflight() { return tryAcquire(inflight_, max_inflight_, Reason::MaxInflight); }
  void releaseInflight() { inflight_.fetch_sub(1, std::memory_order_relaxed); }

  uint32_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint32_t pending() const { return pending_.load(std::memory_order_relaxed); }
  uint32_t inflight() const { return inflight_.load(std::memory_order_relaxed); }

 private:
  static Reason tryAcquire(std::atomic<uint32_t>& counter, const std::atomic<uint32_t>& limit,
                           Reason reason);

  std::atomic<uint32_t> connections_{0}, pending_{0}, inflight_{0};
  std::atomic<uint32_t> max_connections_{0}, max_pending_{0}, max_inflight_{0};
};

}  // namespace cutover
