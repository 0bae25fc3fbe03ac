#include "policy/health_state.h"

#include <algorithm>

namespace cutover {

HealthState::HealthState(size_t endpoints, const config::HealthCheck& cfg, uint64_t seed)
    : cfg_(cfg), count_(endpoints), endpoints_(std::make_unique<Endpoint[]>(endpoints)) {
  Rng seeds(seed);
  for (size_t i = 0; i < count_; ++i) {
    endpoints_[i].backoff.emplace(cfg.backoff_base, 1.5, cfg.backoff_max, 0.2, seeds.next());
  }
}

bool HealthState::onCheckResult(size_t endpoint, bool pass, int64_t now_ns) {
  if (endpoint >= count_) return false;
  Endpoint& e = endpoints_[endpoint];
  std::lock_guard lock(mu_);
  e.last_failed = !pass;
  const bool was = e.healthy.load(std::memory_order_relaxed);
  bool now_healthy = was;
  if (pass) {
    e.fails = 0;
    ++e.passes;
    if (!was && e.passes >= std::max<uint32_t>(1, cfg_.healthy_threshold)) now_healthy = true;
  } else {
    e.passes = 0;
    ++e.fails;
    if (was && e.fails >= std::max<uint32_t>(1, cfg_.unhealthy_threshold)) now_healthy = false;
  }
  if (now_healthy == was) return false;
  e.healthy.store(now_healthy, std::memory_order_relaxed);
  e.last_change_ns = now_ns;
  return true;
}

bool HealthState::healthy(size_t endpoint) const {
  if (endpoint >= count_) return false;
  if (!cfg_.enabled) return true;
  return endpoints_[endpoint].healthy.load(std::memory_order_relaxed);
}

config::Duration HealthState::nextDelay(size_t endpoint) {
  if (endpoint >= count_) return cfg_.interval;
  Endpoint& e = endpoints_[endpoint];
  std::lock_guard lock(mu_);
  if (!e.last_failed) {
    e.backoff->reset();
    return cfg_.interval;
  }
  return e.backoff->next();
}

size_t HealthState::healthyCount() const {
  size_t n = 0;
  for (size_t i = 0; i < count_; ++i) n += healthy(i) ? 1 : 0;
  return n;
}

int64_t HealthState::lastChangeNs(size_t endpoint) const {
  if (endpoint >= count_) return 0;
  std::lock_guard lock(mu_);
  return endpoints_[endpoint].last_change_ns;
}

}  // namespace cutover
