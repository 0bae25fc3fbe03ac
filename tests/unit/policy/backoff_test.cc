#include "policy/backoff.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <vector>

using namespace cutover;
using namespace std::chrono_literals;

TEST_CASE("Rng: same seed, same sequence; below() stays below") {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 100; ++i) CHECK(a.next() == b.next());
  CHECK(a.next() != c.next());
  Rng r(1);
  std::vector<int> hits(10, 0);
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t v = r.below(10);
    REQUIRE(v < 10);
    ++hits[v];
  }
  for (int h : hits) CHECK(h > 9'000);  // roughly uniform: each ~10'000
  CHECK(r.below(0) == 0);
  for (int i = 0; i < 1000; ++i) {
    const double u = r.uniform01();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
  }
}

TEST_CASE("full jitter: attempt n is uniform in [0, min(max, base·2^n)]") {
  Rng rng(3);
  const std::vector<int64_t> caps = {25, 50, 100, 200, 250, 250, 250};
  for (uint32_t attempt = 0; attempt < caps.size(); ++attempt) {
    int64_t lo = 1'000'000, hi = -1;
    for (int i = 0; i < 20'000; ++i) {
      const int64_t d = fullJitterBackoff(attempt, 25ms, 250ms, rng).count();
      REQUIRE(d >= 0);
      REQUIRE(d <= caps[attempt]);
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    INFO("attempt " << attempt);
    CHECK(lo == 0);
    CHECK(hi == caps[attempt]);
  }
  // Huge attempt numbers neither overflow nor loop for long.
  for (int i = 0; i < 100; ++i) CHECK(fullJitterBackoff(4'000'000'000u, 25ms, 250ms, rng) <= 250ms);
  CHECK(fullJitterBackoff(5, 0ms, 250ms, rng) == 0ms);
}

TEST_CASE("retryDelay honours Retry-After up to the max") {
  Rng rng(1);
  config::Retry policy;
  policy.backoff_base = 25ms;
  policy.backoff_max = 250ms;
  CHECK(retryDelay(0, policy, 100ms, rng) == 100ms);
  CHECK(retryDelay(3, policy, 100ms, rng) == 100ms);
  CHECK(retryDelay(0, policy, std::chrono::seconds(120), rng) == 250ms);
  CHECK(retryDelay(0, policy, 0ms, rng) == 0ms);
  for (int i = 0; i < 1000; ++i) {
    const auto d = retryDelay(1, policy, std::nullopt, rng);
    REQUIRE(d >= 0ms);
    REQUIRE(d <= 50ms);
  }
}

TEST_CASE("GrowingBackoff without jitter: 1 s, 1.5 s, 2.25 s … 30 s, reset to 1 s") {
  GrowingBackoff b(1s, 1.5, 30s, 0.0, 1);
  const std::vector<int64_t> expected_ms = {1000,  1500,  2250,  3375,  5063,  7594,
                                            11391, 17086, 25629, 30000, 30000, 30000};
  for (int64_t e : expected_ms) {
    CHECK(b.nominal().count() == e);
    CHECK(b.next().count() == e);
  }
  b.reset();
  CHECK(b.next() == 1s);
  CHECK(b.next() == 1500ms);
}

TEST_CASE("GrowingBackoff jitter stays within ±20% and never above the max") {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    GrowingBackoff b(seed);  // health-probe defaults
    double nominal = 1000;
    for (int i = 0; i < 15; ++i) {
      const double d = static_cast<double>(b.next().count());
      REQUIRE(d >= nominal * 0.8 - 1);
      REQUIRE(d <= std::min(nominal * 1.2, 30'000.0) + 1);
      nominal = std::min(nominal * 1.5, 30'000.0);
    }
  }
  // The jitter spreads: first values over many seeds are not all the same.
  std::set<int64_t> firsts;
  for (uint64_t seed = 0; seed < 50; ++seed) firsts.insert(GrowingBackoff(seed).next().count());
  CHECK(firsts.size() > 40);
}
