#include "policy/health_state.h"

#include <doctest/doctest.h>

using namespace cutover;
using namespace std::chrono_literals;

namespace {

config::HealthCheck checkConfig() {
  config::HealthCheck c;
  c.enabled = true;
  c.interval = 5s;
  c.healthy_threshold = 2;
  c.unhealthy_threshold = 3;
  c.backoff_base = 1s;
  c.backoff_max = 30s;
  return c;
}

}  // namespace

TEST_CASE("endpoints start healthy, go down after 3 failed checks and up after 2 passes") {
  HealthState h(2, checkConfig(), 1);
  CHECK(h.size() == 2);
  CHECK(h.healthy(0));
  CHECK(h.healthy(1));
  CHECK_FALSE(h.onCheckResult(0, false, 10));
  CHECK_FALSE(h.onCheckResult(0, false, 20));
  CHECK(h.healthy(0));
  CHECK(h.onCheckResult(0, false, 30));  // third failure flips it
  CHECK_FALSE(h.healthy(0));
  CHECK(h.lastChangeNs(0) == 30);
  CHECK(h.healthy(1));  // endpoints are independent
  CHECK(h.healthyCount() == 1);
  CHECK(h.anyHealthy());

  CHECK_FALSE(h.onCheckResult(0, true, 40));
  CHECK_FALSE(h.healthy(0));
  CHECK_FALSE(h.onCheckResult(0, false, 50));  // a failure resets the pass count
  CHECK_FALSE(h.onCheckResult(0, true, 60));
  CHECK(h.onCheckResult(0, true, 70));
  CHECK(h.healthy(0));
  CHECK(h.lastChangeNs(0) == 70);
}

TEST_CASE("a pass between failures keeps an endpoint healthy") {
  HealthState h(1, checkConfig(), 1);
  for (int i = 0; i < 10; ++i) {
    h.onCheckResult(0, false, 0);
    h.onCheckResult(0, false, 0);
    h.onCheckResult(0, true, 0);
  }
  CHECK(h.healthy(0));
}

TEST_CASE("all endpoints down: anyHealthy is false") {
  HealthState h(2, checkConfig(), 1);
  for (size_t e = 0; e < 2; ++e) {
    for (int i = 0; i < 3; ++i) h.onCheckResult(e, false, 0);
  }
  CHECK_FALSE(h.anyHealthy());
  CHECK(h.healthyCount() == 0);
}

TEST_CASE("check schedule: interval while passing, growing backoff while down, interval again") {
  auto cfg = checkConfig();
  HealthState h(1, cfg, 7);
  CHECK(h.nextDelay(0) == 5s);
  h.onCheckResult(0, true, 0);
  CHECK(h.nextDelay(0) == 5s);

  double nominal = 1000;
  for (int i = 0; i < 12; ++i) {
    h.onCheckResult(0, false, 0);
    const double d = static_cast<double>(h.nextDelay(0).count());
    INFO("failed check " << i << " delay " << d);
    CHECK(d >= nominal * 0.8 - 1);
    CHECK(d <= std::min(nominal * 1.2, 30'000.0) + 1);
    nominal = std::min(nominal * 1.5, 30'000.0);
  }
  h.onCheckResult(0, true, 0);  // it answers: normal interval at once, though still unhealthy
  CHECK_FALSE(h.healthy(0));
  CHECK(h.nextDelay(0) == 5s);
  h.onCheckResult(0, false, 0);  // down again: the backoff starts over from 1 s
  const auto d = h.nextDelay(0);
  CHECK(d >= 800ms);
  CHECK(d <= 1200ms);
}

TEST_CASE("health checking disabled: everything healthy") {
  auto cfg = checkConfig();
  cfg.enabled = false;
  HealthState h(1, cfg, 1);
  for (int i = 0; i < 5; ++i) h.onCheckResult(0, false, 0);
  CHECK(h.healthy(0));
  CHECK_FALSE(h.healthy(1));  // out of range
}
