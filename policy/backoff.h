// Random numbers and backoff schedules shared by retries, the circuit breaker and health checks.
//
// Nothing here reads a clock or sleeps: functions return how long to wait, and the caller arms a
// timer. Every random choice comes from an explicit Rng so tests can pin the seed.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "config/config.h"

namespace cutover {

// splitmix64: tiny, fast, good enough for jitter, request ids and split buckets. Not thread-safe:
// own one per thread (threadRng()) or guard it with the lock of the object that owns it.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, n); n == 0 gives 0.
  uint64_t below(uint64_t n);
  // Uniform in [0, 1).
  double uniform01();

 private:
  uint64_t state_;
};

// The calling thread's own generator, seeded once per thread from std::random_device.
Rng& threadRng();

// Full-jitter exponential backoff (AWS architecture blog): uniform in
// [0, min(max, base * 2^attempt)], with attempt 0 for the delay before the first retry.
config::Duration fullJitterBackoff(uint32_t attempt, config::Duration base, config::Duration max,
                                   Rng& rng);

// Delay before retry number `attempt` (0-based) under `policy`: the backend's Retry-After when it
// sent one, capped at policy.backoff_max, else full jitter between backoff_base and backoff_max.
config::Duration retryDelay(uint32_t attempt, const config::Retry& policy,
                            std::optional<config::Duration> retry_after, Rng& rng);

// A delay that grows by `multiplier` on every next() up to `max`, each value jittered by ±`jitter`
// (a fraction) and clamped to `max`: 1 s → 1.5 s → 2.25 s … 30 s for health probes, 60 s → 90 s …
// for breaker cool-downs. reset() goes back to `base`. Not thread-safe (the owner locks).
class GrowingBackoff {
 public:
  GrowingBackoff(config::Duration base, double multiplier, config::Duration max, double jitter,
                 uint64_t seed);
  // Health-probe defaults: 1 s × 1.5 up to 30 s, ±20%.
  explicit GrowingBackoff(uint64_t seed)
      : GrowingBackoff(std::chrono::seconds(1), 1.5, std::chrono::seconds(30), 0.2, seed) {}

  // The jittered current delay; the nominal value then grows for the following call.
  config::Duration next();
  void reset() { nominal_ms_ = static_cast<double>(base_.count()); }
  // Un-jittered value the next call to next() is centred on.
  config::Duration nominal() const;

 private:
  config::Duration base_;
  config::Duration max_;
  double multiplier_;
  double jitter_;
  double nominal_ms_;
  Rng rng_;
};

}  // namespace cutover
