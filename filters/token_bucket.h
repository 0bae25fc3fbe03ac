// Token buckets: one lock-free bucket, and a bounded, sharded table of buckets keyed by a string.
//
// A bucket holds `burst` tokens and gains `rate` tokens per `per`. It is stored as a single number,
// the GCRA "theoretical arrival time" (TAT): the instant at which the bucket would be full again if
// nothing else were taken. Taking a token moves TAT forward by one emission interval T = per/rate;
// a take is allowed while TAT stays within burst*T of now. This is exactly a token bucket (with
// fractional refill) but fits one std::atomic<int64_t>, so every worker thread updates the same
// process-wide bucket with a compare-and-swap and the configured rate is the process-wide rate.
//
// Time is passed in (monotonic nanoseconds from a Clock); nothing here reads a clock or sleeps.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "config/config.h"

namespace cutover {

// The parameters of a bucket, in the integer form the arithmetic uses.
struct BucketParams {
  int64_t interval_ns = 1;   // T: time to earn one token (rounded to the nanosecond)
  int64_t tolerance_ns = 1;  // burst * T: how far TAT may run ahead of now
  uint32_t burst = 1;

  // rate 0 is treated as 1 and burst 0 as `rate` (the config default).
  static BucketParams from(uint32_t rate, config::Duration per, uint32_t burst);
  static BucketParams from(const config::RateLimit& limit) {
    return from(limit.rate, limit.per, limit.burst);
  }
};

class TokenBucket {
 public:
  struct Decision {
    bool allowed = false;
    uint32_t remaining = 0;      // whole tokens left after this request
    uint32_t reset_s = 0;        // seconds (rounded up) until the bucket is full again
    uint32_t retry_after_s = 0;  // denied: seconds (rounded up, >= 1) until a token is there
  };

  explicit TokenBucket(const BucketParams& params) : params_(params) {}
  explicit TokenBucket(const config::RateLimit& limit) : TokenBucket(BucketParams::from(limit)) {}

  // Takes one token if there is one. Lock-free and thread-safe; a denied take changes nothing.
  Decision take(int64_t now_ns);
  // Whole tokens available at now_ns, without taking any.
  uint32_t available(int64_t now_ns) const;
  const BucketParams& params() const { return params_; }

  // The arithmetic on a bare TAT, shared with BucketTable (which runs it under a shard lock).
  // `tat` is updated only when the take is allowed.
  static Decision step(int64_t& tat, const BucketParams& p, int64_t now_ns);
  static uint32_t availableAt(int64_t tat, const BucketParams& p, int64_t now_ns);

 private:
  const BucketParams params_;
  // Starts in the past: a new bucket is full.
  std::atomic<int64_t> tat_{0};
};

// Buckets keyed by a string (client address, header value), one set of parameters for all.
//
// Bounded: at most `max_keys` buckets, split over shards that each hold a mutex, a hash map and an
// LRU list; when a shard is full its least recently used key is evicted (that key starts again
// with a full bucket). A take holds its shard's lock for a hash lookup and a few arithmetic
// instructions, never across I/O. Owned through a shared_ptr by the StateStore and by every config
// snapshot that uses it, so buckets survive a reload that keeps the same limit.
class BucketTable {
 public:
  static constexpr size_t kDefaultShards = 16;

  // The capacity is split evenly over the shards (fewer shards when max_keys is small), so size()
  // never exceeds max_keys.
  BucketTable(const BucketParams& params, size_t max_keys, size_t shards = kDefaultShards);
  explicit BucketTable(const config::RateLimit& limit, size_t shards = kDefaultShards)
      : BucketTable(BucketParams::from(limit), limit.max_keys, shards) {}
  BucketTable(const BucketTable&) = delete;
  BucketTable& operator=(const BucketTable&) = delete;

  // Takes a token from `key`'s bucket, creating it (full) if absent. Allocates only when a key
  // is new and no evicted entry can be reused.
  TokenBucket::Decision take(std::string_view key, int64_t now_ns);
  // Tokens available for `key` without taking one (a full bucket when the key is absent).
  uint32_t available(std::string_view key, int64_t now_ns) const;
  bool contains(std::string_view key) const;
  size_t size() const;
  size_t capacity() const { return per_shard_cap_ * shard_count_; }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  const BucketParams& params() const { return params_; }

 private:
  struct Entry {
    std::string key;
    int64_t tat;
  };
  struct Shard {
    mutable std::mutex mu;
    std::list<Entry> lru;  // front = most recently used
    // Keys are views of the strings in `lru`, whose nodes never move.
    std::unordered_map<std::string_view, std::list<Entry>::iterator> index;
  };

  Shard& shardFor(std::string_view key) const;

  const BucketParams params_;
  size_t shard_count_;
  size_t per_shard_cap_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace cutover
