#include "policy/backoff.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <thread>

namespace cutover {

uint64_t Rng::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rng::below(uint64_t n) {
  if (n == 0) return 0;
  // Lemire's multiply-shift with rejection: unbiased without a division on the common path.
  uint64_t x = next();
  __extension__ using U128 = unsigned __int128;
  U128 m = static_cast<U128>(x) * n;
  auto low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      x = next();
      m = static_cast<U128>(x) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double Rng::uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

Rng& threadRng() {
  thread_local Rng rng([] {
    std::random_device rd;
    const uint64_t seed = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                          std::hash<std::thread::id>{}(std::this_thread::get_id());
    return seed;
  }());
  return rng;
}

config::Duration fullJitterBackoff(uint32_t attempt, config::Duration base, config::Duration max,
                                   Rng& rng) {
  const int64_t max_ms = std::max<int64_t>(0, max.count());
  int64_t cap = std::max<int64_t>(0, base.count());
  // Doubling stops as soon as it reaches max, so it can never overflow.
  for (uint32_t i = 0; i < attempt && cap > 0 && cap < max_ms; ++i) {
    cap = cap > max_ms / 2 ? max_ms : cap * 2;
  }
  cap = std::min(cap, max_ms);
  return config::Duration(static_cast<int64_t>(rng.below(static_cast<uint64_t>(cap) + 1)));
}

config::Duration retryDelay(uint32_t attempt, const config::Retry& policy,
                            std::optional<config::Duration> retry_after, Rng& rng) {
  if (retry_after) {
    return std::clamp(*retry_after, config::Duration::zero(), policy.backoff_max);
  }
  return fullJitterBackoff(attempt, policy.backoff_base, policy.backoff_max, rng);
}

GrowingBackoff::GrowingBackoff(config::Duration base, double multiplier, config::Duration max,
                               double jitter, uint64_t seed)
    : base_(base),
      max_(std::max(base, max)),
      multiplier_(std::max(1.0, multiplier)),
      jitter_(std::clamp(jitter, 0.0, 1.0)),
      nominal_ms_(static_cast<double>(base.count())),
      rng_(seed) {}

config::Duration GrowingBackoff::nominal() const {
  return config::Duration(static_cast<int64_t>(std::llround(nominal_ms_)));
}

config::Duration GrowingBackoff::next() {
  const double factor = 1.0 + jitter_ * (2.0 * rng_.uniform01() - 1.0);
  const double max_ms = static_cast<double>(max_.count());
  const double value = std::min(max_ms, nominal_ms_ * factor);
  nominal_ms_ = std::min(max_ms, nominal_ms_ * multiplier_);
  return config::Duration(static_cast<int64_t>(std::llround(value)));
}

}  // namespace cutover
