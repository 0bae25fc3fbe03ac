#include "policy/circuit_breaker.h"

#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"

using namespace cutover;
using namespace std::chrono_literals;

namespace {

config::CircuitBreaker breakerConfig(double jitter = 0.0) {
  config::CircuitBreaker c;
  c.enabled = true;
  c.consecutive_failures = 5;
  c.cooldown = 60s;
  c.max_cooldown = 300s;
  c.cooldown_multiplier = 1.5;
  c.jitter = jitter;
  c.half_open_probes = 1;
  return c;
}

struct Transition {
  BreakerState from, to;
  std::string why;
};

void trip(CircuitBreaker& b, const ManualClock& clock, int failures = 5) {
  for (int i = 0; i < failures; ++i) {
    REQUIRE(b.allowRequest(clock.nowNs()));
    b.onFailure(clock.nowNs());
  }
}

}  // namespace

TEST_CASE("5 consecutive failures open the breaker; a success in between resets the count") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  for (int i = 0; i < 4; ++i) b.onFailure(clock.nowNs());
  b.onSuccess(clock.nowNs());
  for (int i = 0; i < 4; ++i) b.onFailure(clock.nowNs());
  CHECK(b.state(clock.nowNs()) == BreakerState::Closed);
  CHECK(b.allowRequest(clock.nowNs()));
  b.onFailure(clock.nowNs());
  CHECK(b.state(clock.nowNs()) == BreakerState::Open);
  CHECK(b.trips() == 1);
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
}

TEST_CASE("open → half-open after the cool-down, one probe, success closes") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  trip(b, clock);
  CHECK(b.lastCooldown() == 60s);
  clock.advance(59'999ms);
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
  CHECK(b.state(clock.nowNs()) == BreakerState::Open);
  clock.advance(1ms);
  CHECK(b.allowRequest(clock.nowNs()));  // the probe
  CHECK(b.state(clock.nowNs()) == BreakerState::HalfOpen);
  CHECK_FALSE(b.allowRequest(clock.nowNs()));  // only one probe
  b.onSuccess(clock.nowNs());
  CHECK(b.state(clock.nowNs()) == BreakerState::Closed);
  CHECK(b.allowRequest(clock.nowNs()));
  CHECK(b.trips() == 1);
}

TEST_CASE("half-open admits exactly half_open_probes requests") {
  ManualClock clock;
  auto cfg = breakerConfig();
  cfg.half_open_probes = 3;
  CircuitBreaker b(cfg, 1);
  trip(b, clock);
  clock.advance(60s);
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += b.allowRequest(clock.nowNs()) ? 1 : 0;
  CHECK(admitted == 3);
}

TEST_CASE("a probe admitted but not sent is given back; never more than half_open_probes") {
  ManualClock clock;
  auto cfg = breakerConfig();
  cfg.half_open_probes = 1;
  CircuitBreaker b(cfg, 1);
  b.releaseProbe();  // closed: nothing to give back
  trip(b, clock);
  clock.advance(60s);
  CHECK(b.allowRequest(clock.nowNs()));
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
  b.releaseProbe();  // the router sent that request elsewhere
  CHECK(b.allowRequest(clock.nowNs()));
  b.releaseProbe();
  b.releaseProbe();  // a second give-back does not make two probes
  CHECK(b.allowRequest(clock.nowNs()));
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
}

TEST_CASE("failed probes grow the cool-down 60 → 90 → 135 … capped at max, success resets it") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  trip(b, clock);
  const std::vector<int64_t> expected_s = {60, 90, 135, 202, 300, 300, 300};
  for (size_t i = 0; i < expected_s.size(); ++i) {
    INFO("open period " << i);
    const auto cooldown = b.lastCooldown();
    CHECK(std::chrono::duration_cast<std::chrono::seconds>(cooldown).count() == expected_s[i]);
    CHECK(b.openUntilNs() == clock.nowNs() + std::chrono::nanoseconds(cooldown).count());
    clock.advance(cooldown);
    REQUIRE(b.allowRequest(clock.nowNs()));
    if (i + 1 < expected_s.size()) b.onFailure(clock.nowNs());
  }
  CHECK(b.lastCooldown() == 300s);
  CHECK(b.trips() == expected_s.size());
  b.onSuccess(clock.nowNs());
  CHECK(b.state(clock.nowNs()) == BreakerState::Closed);
  trip(b, clock);
  CHECK(b.lastCooldown() == 60s);  // a new trip starts from the base again
}

TEST_CASE("135 s cool-down is exact, 202.5 s rounds to the millisecond") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  trip(b, clock);
  for (int i = 0; i < 3; ++i) {
    clock.advance(b.lastCooldown());
    REQUIRE(b.allowRequest(clock.nowNs()));
    b.onFailure(clock.nowNs());
  }
  CHECK(b.lastCooldown() == 202'500ms);
}

TEST_CASE("jittered cool-downs stay within ±20% of the nominal value, over many seeds") {
  const std::vector<double> nominal_ms = {60'000, 90'000, 135'000, 202'500, 300'000};
  std::vector<double> lo(nominal_ms.size(), 1e18), hi(nominal_ms.size(), 0);
  for (uint64_t seed = 0; seed < 500; ++seed) {
    ManualClock clock;
    CircuitBreaker b(breakerConfig(0.2), seed);
    trip(b, clock);
    for (size_t i = 0; i < nominal_ms.size(); ++i) {
      const double got = static_cast<double>(b.lastCooldown().count());
      REQUIRE(got >= nominal_ms[i] * 0.8 - 1);
      REQUIRE(got <= std::min(nominal_ms[i] * 1.2, 300'000.0) + 1);
      lo[i] = std::min(lo[i], got);
      hi[i] = std::max(hi[i], got);
      clock.advance(b.lastCooldown());
      REQUIRE(b.allowRequest(clock.nowNs()));
      b.onFailure(clock.nowNs());
    }
  }
  // The jitter really spreads: 500 seeds cover most of the ±20% band.
  CHECK(lo[0] < 60'000 * 0.82);
  CHECK(hi[0] > 60'000 * 1.18);
  CHECK(hi[4] == 300'000);  // the cap clamps the upper half of the band
}

TEST_CASE("same seed, same schedule") {
  auto schedule = [](uint64_t seed) {
    ManualClock clock;
    CircuitBreaker b(breakerConfig(0.2), seed);
    trip(b, clock);
    std::vector<int64_t> out;
    for (int i = 0; i < 4; ++i) {
      out.push_back(b.lastCooldown().count());
      clock.advance(b.lastCooldown());
      b.allowRequest(clock.nowNs());
      b.onFailure(clock.nowNs());
    }
    return out;
  };
  CHECK(schedule(42) == schedule(42));
  CHECK(schedule(42) != schedule(43));
}

TEST_CASE("listener hears every transition with its reason") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  std::vector<Transition> seen;
  b.setListener([&](BreakerState from, BreakerState to, std::string_view why) {
    seen.push_back({from, to, std::string(why)});
  });
  trip(b, clock);
  clock.advance(60s);
  b.allowRequest(clock.nowNs());
  b.onFailure(clock.nowNs());
  clock.advance(90s);
  b.allowRequest(clock.nowNs());
  b.onSuccess(clock.nowNs());
  REQUIRE(seen.size() == 5);
  CHECK(seen[0].from == BreakerState::Closed);
  CHECK(seen[0].to == BreakerState::Open);
  CHECK(seen[0].why == "5 consecutive failures");
  CHECK(seen[1].to == BreakerState::HalfOpen);
  CHECK(seen[1].why == "cool-down elapsed");
  CHECK(seen[2].from == BreakerState::HalfOpen);
  CHECK(seen[2].to == BreakerState::Open);
  CHECK(seen[2].why == "probe failed");
  CHECK(seen[3].to == BreakerState::HalfOpen);
  CHECK(seen[4].from == BreakerState::HalfOpen);
  CHECK(seen[4].to == BreakerState::Closed);
  CHECK(seen[4].why == "probe succeeded");
}

TEST_CASE("listener may call back into the breaker (it runs outside the lock)") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  BreakerState observed = BreakerState::Closed;
  b.setListener(
      [&](BreakerState, BreakerState, std::string_view) { observed = b.state(clock.nowNs()); });
  trip(b, clock);
  CHECK(observed == BreakerState::Open);
}

TEST_CASE("outcomes reported while open are ignored") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  trip(b, clock);
  b.onSuccess(clock.nowNs());  // a request admitted before the trip finishing late
  CHECK(b.state(clock.nowNs()) == BreakerState::Open);
  for (int i = 0; i < 10; ++i) b.onFailure(clock.nowNs());
  CHECK(b.trips() == 1);
  CHECK(b.lastCooldown() == 60s);
}

TEST_CASE("an unanswered probe is re-issued after one base cool-down") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  trip(b, clock);
  clock.advance(60s);
  CHECK(b.allowRequest(clock.nowNs()));  // probe lost: neither onSuccess nor onFailure
  clock.advance(59s);
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
  clock.advance(1s);
  CHECK(b.allowRequest(clock.nowNs()));
  CHECK_FALSE(b.allowRequest(clock.nowNs()));
}

TEST_CASE("a disabled breaker admits everything") {
  ManualClock clock;
  auto cfg = breakerConfig();
  cfg.enabled = false;
  CircuitBreaker b(cfg, 1);
  for (int i = 0; i < 100; ++i) b.onFailure(clock.nowNs());
  CHECK(b.allowRequest(clock.nowNs()));
  CHECK(b.state(clock.nowNs()) == BreakerState::Closed);
  CHECK(b.trips() == 0);
}

TEST_CASE("concurrent failures trip the breaker exactly once") {
  ManualClock clock;
  CircuitBreaker b(breakerConfig(), 1);
  std::atomic<int> transitions{0};
  b.setListener([&](BreakerState, BreakerState, std::string_view) { ++transitions; });
  auto worker = [&] {
    for (int i = 0; i < 10'000; ++i) {
      if (b.allowRequest(clock.nowNs())) b.onFailure(clock.nowNs());
    }
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  CHECK(b.trips() == 1);
  CHECK(transitions.load() == 1);
}

TEST_CASE("isFailure follows the configured outcomes") {
  auto cfg = breakerConfig();
  CHECK_FALSE(isFailure(cfg, Outcome::Success));
  CHECK(isFailure(cfg, Outcome::ConnectError));
  CHECK(isFailure(cfg, Outcome::Timeout));
  CHECK(isFailure(cfg, Outcome::Reset));
  CHECK(isFailure(cfg, Outcome::Status, 500));
  CHECK(isFailure(cfg, Outcome::Status, 503));
  CHECK_FALSE(isFailure(cfg, Outcome::Status, 404));
  CHECK_FALSE(isFailure(cfg, Outcome::Status, 429));
  cfg.on_5xx = false;
  cfg.on_timeout = false;
  cfg.on_status = {503, 429};
  CHECK_FALSE(isFailure(cfg, Outcome::Status, 500));
  CHECK(isFailure(cfg, Outcome::Status, 503));
  CHECK(isFailure(cfg, Outcome::Status, 429));
  CHECK_FALSE(isFailure(cfg, Outcome::Timeout));
}

TEST_CASE("ConcurrencyLimits: each limit answers with its own reason") {
  config::CircuitBreaker cfg;
  cfg.max_connections = 2;
  cfg.max_pending = 1;
  cfg.max_inflight = 3;
  ConcurrencyLimits limits(cfg);
  CHECK(limits.tryAcquireConnection() == Reason::None);
  CHECK(limits.tryAcquireConnection() == Reason::None);
  CHECK(limits.tryAcquireConnection() == Reason::MaxConnections);
  CHECK(limits.connections() == 2);
  CHECK(limits.tryAcquirePending() == Reason::None);
  CHECK(limits.tryAcquirePending() == Reason::MaxPending);
  for (int i = 0; i < 3; ++i) CHECK(limits.tryAcquireInflight() == Reason::None);
  CHECK(limits.tryAcquireInflight() == Reason::MaxInflight);
  limits.releaseInflight();
  CHECK(limits.tryAcquireInflight() == Reason::None);
  limits.releaseConnection();
  CHECK(limits.tryAcquireConnection() == Reason::None);

  cfg.max_inflight = 0;  // a reload lifts the limit; counters carry on
  limits.setLimits(cfg);
  for (int i = 0; i < 100; ++i) CHECK(limits.tryAcquireInflight() == Reason::None);
  CHECK(limits.inflight() == 103);
}

TEST_CASE("ConcurrencyLimits never over-admit under two threads") {
  config::CircuitBreaker cfg;
  cfg.max_inflight = 7;
  ConcurrencyLimits limits(cfg);
  std::atomic<int> admitted{0};
  auto worker = [&] {
    for (int i = 0; i < 100'000; ++i) {
      if (limits.tryAcquireInflight() == Reason::None) ++admitted;
    }
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  CHECK(admitted.load() == 7);
  CHECK(limits.inflight() == 7);
}
