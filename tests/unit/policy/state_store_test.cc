#include "policy/state_store.h"

#include <doctest/doctest.h>

#include "common/clock.h"

using namespace cutover;
using namespace std::chrono_literals;

namespace {

config::RateLimit limit(uint32_t rate, config::Duration per) {
  config::RateLimit l;
  l.rate = rate;
  l.per = per;
  return l;
}

}  // namespace

TEST_CASE("same key and params keep the same table and its tokens") {
  ManualClock clock;
  StateStore store(1);
  auto a = store.rateLimitTable("route:api", limit(5, 60s));
  for (int i = 0; i < 5; ++i) REQUIRE(a->take("1.2.3.4", clock.nowNs()).allowed);
  auto b = store.rateLimitTable("route:api", limit(5, 60s));
  CHECK(a == b);
  CHECK_FALSE(b->take("1.2.3.4", clock.nowNs()).allowed);

  auto explicit_burst = limit(5, 60s);
  explicit_burst.burst = 5;  // the same as the default
  explicit_burst.mode = config::RateLimit::Mode::DryRun;
  explicit_burst.response_headers = false;
  CHECK(store.rateLimitTable("route:api", explicit_burst) == a);
}

TEST_CASE("changed params get a fresh table; other keys are independent") {
  ManualClock clock;
  StateStore store(1);
  auto a = store.rateLimitTable("route:api", limit(5, 60s));
  for (int i = 0; i < 5; ++i) REQUIRE(a->take("1.2.3.4", clock.nowNs()).allowed);
  auto b = store.rateLimitTable("route:api", limit(6, 60s));
  CHECK(a != b);
  CHECK(b->available("1.2.3.4", clock.nowNs()) == 6);
  CHECK(store.rateLimitTable("route:other", limit(6, 60s)) != b);
  auto by_header = limit(6, 60s);
  by_header.key = config::RateLimit::Key::Header;
  by_header.header = "x-user";
  CHECK(store.rateLimitTable("route:api", by_header) != b);
  // The old table keeps working for whoever still holds it.
  CHECK_FALSE(a->take("1.2.3.4", clock.nowNs()).allowed);
}

TEST_CASE("breakers are kept while their settings are unchanged") {
  ManualClock clock;
  StateStore store(1);
  config::CircuitBreaker cfg;
  cfg.enabled = true;
  cfg.consecutive_failures = 1;
  auto a = store.breaker("new", cfg);
  a->onFailure(clock.nowNs());
  CHECK(store.breaker("new", cfg) == a);
  CHECK(store.breaker("new", cfg)->state(clock.nowNs()) == BreakerState::Open);
  CHECK(store.breaker("legacy", cfg) != a);
  cfg.consecutive_failures = 3;
  auto b = store.breaker("new", cfg);
  CHECK(b != a);
  CHECK(b->state(clock.nowNs()) == BreakerState::Closed);
}

TEST_CASE("retry budgets and concurrency counters are never replaced; limits follow the config") {
  StateStore store(1);
  auto budget = store.retryBudget("new");
  budget->startRequest();
  CHECK(store.retryBudget("new") == budget);
  CHECK(store.retryBudget("new")->activeRequests() == 1);

  config::CircuitBreaker cfg;
  cfg.max_inflight = 1;
  auto c = store.concurrency("new", cfg);
  CHECK(c->tryAcquireInflight() == Reason::None);
  CHECK(c->tryAcquireInflight() == Reason::MaxInflight);
  cfg.max_inflight = 2;
  CHECK(store.concurrency("new", cfg) == c);
  CHECK(c->tryAcquireInflight() == Reason::None);
  CHECK(c->inflight() == 2);
}

TEST_CASE("health state is kept while endpoints and checks are unchanged") {
  StateStore store(1);
  config::HealthCheck hc;
  hc.enabled = true;
  auto a = store.health("new", {"127.0.0.1:9001", "127.0.0.1:9002"}, hc);
  for (int i = 0; i < 3; ++i) a->onCheckResult(1, false, 0);
  auto b = store.health("new", {"127.0.0.1:9001", "127.0.0.1:9002"}, hc);
  CHECK(a == b);
  CHECK_FALSE(b->healthy(1));
  auto c = store.health("new", {"127.0.0.1:9001"}, hc);
  CHECK(c != a);
  CHECK(c->size() == 1);
}

TEST_CASE("backend limiters are one shared bucket per backend") {
  ManualClock clock;
  StateStore store(1);
  auto a = store.backendLimiter("new", limit(2, 1s));
  CHECK(a->take(clock.nowNs()).allowed);
  CHECK(a->take(clock.nowNs()).allowed);
  CHECK(store.backendLimiter("new", limit(2, 1s)) == a);
  CHECK_FALSE(store.backendLimiter("new", limit(2, 1s))->take(clock.nowNs()).allowed);
  CHECK(store.backendLimiter("new", limit(3, 1s)) != a);
}

TEST_CASE("sweep forgets what the latest snapshot did not ask for") {
  StateStore store(1);
  config::CircuitBreaker cb;
  auto keep = store.rateLimitTable("route:a", limit(1, 1s));
  auto drop = store.rateLimitTable("route:b", limit(1, 1s));
  store.breaker("new", cb);
  store.sweep();  // first snapshot built
  CHECK(store.size() == 3);
  CHECK(store.rateLimitTable("route:a", limit(1, 1s)) == keep);
  store.breaker("new", cb);
  store.sweep();  // second snapshot no longer has route b
  CHECK(store.size() == 2);
  CHECK(store.rateLimitTable("route:b", limit(1, 1s)) != drop);
}
