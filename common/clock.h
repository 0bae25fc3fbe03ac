// Time as an interface, so token buckets, breaker cool-downs and backoff can be tested with a
// manual clock that never sleeps.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace cutover {

// Monotonic nanoseconds, for code that reads the real clock directly (the request path).
inline int64_t monotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Monotonic nanoseconds. Implementations must be thread-safe (shared limiters read it from every
// worker).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t nowNs() const = 0;
};

class SteadyClock final : public Clock {
 public:
  int64_t nowNs() const override { return monotonicNs(); }
  static const SteadyClock& instance() {
    static const SteadyClock clock;
    return clock;
  }
};

// For tests: time moves only when advance() is called.
class ManualClock final : public Clock {
 public:
  int64_t nowNs() const override { return now_.load(std::memory_order_relaxed); }
  void advance(std::chrono::nanoseconds d) { now_.fetch_add(d.count(), std::memory_order_relaxed); }
  void set(int64_t ns) { now_.store(ns, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_{1'000'000'000};
};

}  // namespace cutover
