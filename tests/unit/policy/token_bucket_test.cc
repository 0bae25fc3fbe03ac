#include "policy/token_bucket.h"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"

using namespace cutover;
using namespace std::chrono_literals;

namespace {

config::RateLimit limit(uint32_t rate, config::Duration per, uint32_t burst = 0) {
  config::RateLimit l;
  l.rate = rate;
  l.per = per;
  l.burst = burst;
  return l;
}

}  // namespace

TEST_CASE("11th request on a 10-token bucket is denied with Retry-After 1") {
  ManualClock clock;
  TokenBucket bucket(limit(10, 1s));
  for (uint32_t i = 0; i < 10; ++i) {
    const auto d = bucket.take(clock.nowNs());
    REQUIRE(d.allowed);
    CHECK(d.remaining == 9 - i);
    CHECK(d.retry_after_s == 0);
    CHECK(d.reset_s == 1);
  }
  const auto d = bucket.take(clock.nowNs());
  CHECK_FALSE(d.allowed);
  CHECK(d.remaining == 0);
  CHECK(d.retry_after_s == 1);
  CHECK(d.reset_s == 1);
  CHECK(bucket.available(clock.nowNs()) == 0);
}

TEST_CASE("a denied take consumes nothing") {
  ManualClock clock;
  TokenBucket bucket(limit(10, 1s));
  for (int i = 0; i < 10; ++i) REQUIRE(bucket.take(clock.nowNs()).allowed);
  for (int i = 0; i < 1000; ++i) REQUIRE_FALSE(bucket.take(clock.nowNs()).allowed);
  clock.advance(100ms);  // exactly one token earned, whatever the denied attempts
  CHECK(bucket.take(clock.nowNs()).allowed);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);
}

TEST_CASE("5/min: 6th request waits 12 s, then one token every 12 s") {
  ManualClock clock;
  TokenBucket bucket(limit(5, 60s));
  for (uint32_t i = 0; i < 5; ++i) {
    const auto d = bucket.take(clock.nowNs());
    REQUIRE(d.allowed);
    CHECK(d.remaining == 4 - i);
    CHECK(d.reset_s == 12 * (i + 1));
  }
  auto d = bucket.take(clock.nowNs());
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_s == 12);
  CHECK(d.reset_s == 60);

  clock.advance(11s);
  d = bucket.take(clock.nowNs());
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_s == 1);
  clock.advance(999ms);
  d = bucket.take(clock.nowNs());
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_s == 1);  // 1 ms left rounds up to a whole second
  clock.advance(1ms);
  d = bucket.take(clock.nowNs());
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK(d.reset_s == 60);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);

  clock.advance(36s);  // three tokens
  CHECK(bucket.available(clock.nowNs()) == 3);
  for (int i = 0; i < 3; ++i) CHECK(bucket.take(clock.nowNs()).allowed);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);
}

TEST_CASE("refill never exceeds the burst") {
  ManualClock clock;
  TokenBucket bucket(limit(5, 60s));
  CHECK(bucket.take(clock.nowNs()).allowed);
  clock.advance(1h);
  CHECK(bucket.available(clock.nowNs()) == 5);
  for (int i = 0; i < 5; ++i) REQUIRE(bucket.take(clock.nowNs()).allowed);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);
}

TEST_CASE("fractional refill: 1.5 tokens earned admit exactly one request") {
  ManualClock clock;
  TokenBucket bucket(limit(10, 1s));
  for (int i = 0; i < 10; ++i) REQUIRE(bucket.take(clock.nowNs()).allowed);
  clock.advance(150ms);
  CHECK(bucket.take(clock.nowNs()).allowed);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);
  clock.advance(50ms);  // the half token left plus another half
  CHECK(bucket.take(clock.nowNs()).allowed);
  CHECK_FALSE(bucket.take(clock.nowNs()).allowed);
}

TEST_CASE("burst larger than rate") {
  ManualClock clock;
  TokenBucket bucket(limit(2, 1s, 6));
  CHECK(bucket.params().burst == 6);
  auto first = bucket.take(clock.nowNs());
  CHECK(first.remaining == 5);
  for (int i = 0; i < 5; ++i) REQUIRE(bucket.take(clock.nowNs()).allowed);
  auto d = bucket.take(clock.nowNs());
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_s == 1);  // 500 ms for one token
  CHECK(d.reset_s == 3);        // 6 tokens at 2/s
}

TEST_CASE("burst 0 means burst = rate") {
  const BucketParams p = BucketParams::from(limit(200, 60s));
  CHECK(p.burst == 200);
  CHECK(p.interval_ns == 300'000'000);
  CHECK(p.tolerance_ns == 60'000'000'000);
}

TEST_CASE("two threads hammering one bucket at a fixed time admit exactly the burst") {
  ManualClock clock;
  TokenBucket bucket(limit(100, 1s, 1000));
  std::atomic<uint64_t> admitted{0};
  std::atomic<bool> go{false};
  auto worker = [&] {
    while (!go.load()) std::this_thread::yield();
    uint64_t mine = 0;
    for (int i = 0; i < 200'000; ++i) mine += bucket.take(clock.nowNs()).allowed ? 1 : 0;
    admitted += mine;
  };
  std::thread a(worker), b(worker);
  go = true;
  a.join();
  b.join();
  CHECK(admitted.load() == 1000);
}

TEST_CASE("two threads over advancing time admit rate x elapsed + burst") {
  // Each thread advances the shared manual clock as it goes: 2 × 100'000 steps of 100 µs = 20 s
  // of time, during which 10/ms would admit 200'000 + burst. Exactly, since no token is lost.
  ManualClock clock;
  TokenBucket bucket(limit(10'000, 1s, 50));
  const int64_t start = clock.nowNs();
  std::atomic<uint64_t> admitted{0};
  std::atomic<bool> go{false};
  auto worker = [&] {
    while (!go.load()) std::this_thread::yield();
    uint64_t mine = 0;
    for (int i = 0; i < 100'000; ++i) {
      clock.advance(100us);
      for (int j = 0; j < 4; ++j) mine += bucket.take(clock.nowNs()).allowed ? 1 : 0;
    }
    admitted += mine;
  };
  std::thread a(worker), b(worker);
  go = true;
  a.join();
  b.join();
  const double elapsed_s = static_cast<double>(clock.nowNs() - start) / 1e9;
  const double expected = 10'000 * elapsed_s + 50;
  CHECK(elapsed_s == doctest::Approx(20.0));
  CHECK(static_cast<double>(admitted.load()) <= expected);
  CHECK(static_cast<double>(admitted.load()) >= expected * 0.99);
}

TEST_CASE("BucketTable: keys have separate buckets") {
  ManualClock clock;
  BucketTable table(limit(2, 1s), 100);
  CHECK(table.take("10.0.0.1", clock.nowNs()).allowed);
  CHECK(table.take("10.0.0.1", clock.nowNs()).allowed);
  CHECK_FALSE(table.take("10.0.0.1", clock.nowNs()).allowed);
  auto d = table.take("10.0.0.2", clock.nowNs());
  CHECK(d.allowed);
  CHECK(d.remaining == 1);
  CHECK(table.size() == 2);
  CHECK(table.available("10.0.0.1", clock.nowNs()) == 0);
  CHECK(table.available("never-seen", clock.nowNs()) == 2);
  CHECK_FALSE(table.contains("never-seen"));
}

TEST_CASE("BucketTable evicts the least recently used key at its cap") {
  ManualClock clock;
  BucketTable table(BucketParams::from(limit(1, 60s)), 3, 1);
  CHECK(table.capacity() == 3);
  CHECK(table.take("a", clock.nowNs()).allowed);
  CHECK(table.take("b", clock.nowNs()).allowed);
  CHECK(table.take("c", clock.nowNs()).allowed);
  CHECK_FALSE(table.take("a", clock.nowNs()).allowed);  // touches a: b is now the oldest
  CHECK(table.take("d", clock.nowNs()).allowed);        // evicts b
  CHECK(table.size() == 3);
  CHECK(table.evictions() == 1);
  CHECK_FALSE(table.contains("b"));
  CHECK(table.contains("a"));
  CHECK(table.contains("c"));
  CHECK(table.contains("d"));
  CHECK_FALSE(table.take("a", clock.nowNs()).allowed);  // a kept its empty bucket
  CHECK(table.take("b", clock.nowNs()).allowed);        // b starts again full; evicts c
  CHECK_FALSE(table.contains("c"));
}

TEST_CASE("BucketTable stays within its cap under a scan of random keys") {
  ManualClock clock;
  BucketTable table(BucketParams::from(limit(5, 60s)), 1000);  // 16 shards of 62
  CHECK(table.capacity() <= 1000);
  for (int i = 0; i < 50'000; ++i) {
    table.take("198.51." + std::to_string(i / 256) + "." + std::to_string(i % 256), clock.nowNs());
  }
  CHECK(table.size() <= 1000);
  CHECK(table.size() >= 900);
  CHECK(table.evictions() == 50'000 - table.size());
}

TEST_CASE("BucketTable shared by two threads on one key admits exactly the burst") {
  ManualClock clock;
  BucketTable table(limit(100, 1s, 500), 1000);
  std::atomic<uint64_t> admitted{0};
  auto worker = [&] {
    uint64_t mine = 0;
    for (int i = 0; i < 100'000; ++i) mine += table.take("127.0.0.1", clock.nowNs()).allowed;
    admitted += mine;
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  CHECK(admitted.load() == 500);
}

TEST_CASE("SipHash-2-4-128 matches the reference vectors") {
  // vectors_sip128 from the SipHash reference implementation: key 00..0f, input 00..(n-1).
  const SipKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  const std::vector<std::pair<size_t, std::array<uint8_t, 16>>> vectors = {
      {0,
       {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02,
        0x93}},
      {1,
       {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc,
        0x45}},
      {8,
       {0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97,
        0xb4}},
      {15,
       {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3,
        0xd9}},
      {63,
       {0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f, 0xbd,
        0x7c}},
  };
  std::string input;
  for (int i = 0; i < 64; ++i) input.push_back(static_cast<char>(i));
  for (const auto& [len, want] : vectors) {
    CAPTURE(len);
    const Hash128 h = sipHash128(key, std::string_view(input).substr(0, len));
    std::array<uint8_t, 16> got{};
    for (int i = 0; i < 8; ++i) {
      got[static_cast<size_t>(i)] = static_cast<uint8_t>(h.lo >> (8 * i));
      got[static_cast<size_t>(8 + i)] = static_cast<uint8_t>(h.hi >> (8 * i));
    }
    CHECK(got == want);
  }
}

TEST_CASE(
    "BucketTable holds 60 KB keys in fixed-size entries: accounted bytes stay under the bound") {
  ManualClock clock;
  BucketTable table(BucketParams::from(limit(5, 60s)), 2000);
  std::string key(60 * 1024, 'k');
  for (int i = 0; i < 20'000; ++i) {
    const std::string tag = std::to_string(i);
    key.replace(0, tag.size(), tag);  // distinct keys, each 60 KB
    table.take(key, clock.nowNs());
  }
  CHECK(table.size() <= table.capacity());
  CHECK(table.size() >= 1800);
  CHECK(table.accountedBytes() <= table.maxBytes());
  CHECK(table.maxBytes() == table.capacity() * BucketTable::kMaxBytesPerEntry);
  // The same keys as strings would hold 60 KB each: over 100 MB for 1800 of them.
  CHECK(table.accountedBytes() < 2000 * 200);
}

TEST_CASE("BucketTable: a long key keeps its own bucket; keys differing in one late byte differ") {
  ManualClock clock;
  BucketTable table(limit(1, 60s), 100);
  std::string a(50'000, 'x');
  std::string b = a;
  b.back() = 'y';
  CHECK(table.take(a, clock.nowNs()).allowed);
  CHECK_FALSE(table.take(a, clock.nowNs()).allowed);
  CHECK(table.take(b, clock.nowNs()).allowed);
  CHECK(table.contains(a));
  CHECK(table.contains(b));
  CHECK_FALSE(table.contains(std::string(50'000, 'x') + "x"));
}

TEST_CASE("a full default-sized table stays under its documented bound (100,000 keys)") {
  ManualClock clock;
  config::RateLimit l = limit(5, 60s);
  REQUIRE(l.max_keys == 100'000);
  BucketTable table(l);
  for (int i = 0; i < 150'000; ++i) table.take("client-" + std::to_string(i), clock.nowNs());
  CHECK(table.size() == table.capacity());
  CHECK(table.accountedBytes() <= table.maxBytes());
  CHECK(table.maxBytes() <= 12'800'000);
}
