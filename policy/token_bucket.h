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
#include <string_view>
#include <unordered_map>

#include "common/siphash.h"
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
// Bounded in count and in bytes: at most `max_keys` buckets, split over shards that each hold a
// mutex, a hash map and an LRU list; when a shard is full its least recently used key is evicted
// (that key starts again with a full bucket). A key is stored as its keyed 128-bit SipHash
// (common/siphash.h, a secret per-process key), never as the bytes the client sent, so an entry
// has the same fixed size for a 10-byte address and a 60 KB header value: see kMaxBytesPerEntry.
// Two different keys share a bucket only if their 128-bit hashes collide, which nobody can arrange
// without the secret. The map's own hash is half of that SipHash, so crafted keys cannot flood one
// hash chain either.
//
// A take hashes the key, then holds its shard's lock for a hash lookup and a few arithmetic
// instructions, never across I/O. Once a shard is full a new key reuses the evicted entry's list
// and map nodes: no allocation. Owned through a shared_ptr by the StateStore and by every config
// snapshot that uses it, so buckets survive a reload that keeps the same limit.
class BucketTable {
 public:
  static constexpr size_t kDefaultShards = 16;
  // Upper bound of the heap bytes one key costs (its LRU node, its map node and its share of the
  // map's bucket array, with malloc's per-chunk overhead), whatever the key's length. The worst
  // case of a table is capacity() * kMaxBytesPerEntry plus its fixed shard array.
  static constexpr size_t kMaxBytesPerEntry = 128;

  // The capacity is split evenly over the shards (fewer shards when max_keys is small), so size()
  // never exceeds max_keys.
  BucketTable(const BucketParams& params, size_t max_keys, size_t shards = kDefaultShards);
  explicit BucketTable(const config::RateLimit& limit, size_t shards = kDefaultShards)
      : BucketTable(BucketParams::from(limit), limit.max_keys, shards) {}
  BucketTable(const BucketTable&) = delete;
  BucketTable& operator=(const BucketTable&) = delete;

  // Takes a token from `key`'s bucket, creating it (full) if absent. Allocates only while the
  // key's shard is below its share of the capacity.
  TokenBucket::Decision take(std::string_view key, int64_t now_ns);
  // Tokens available for `key` without taking one (a full bucket when the key is absent).
  uint32_t available(std::string_view key, int64_t now_ns) const;
  bool contains(std::string_view key) const;
  size_t size() const;
  size_t capacity() const { return per_shard_cap_ * shard_count_; }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  const BucketParams& params() const { return params_; }
  // Heap bytes held by the entries now, from the sizes of the list and map nodes and the maps'
  // bucket arrays, each rounded up to a glibc malloc chunk. Never more than maxBytes().
  size_t accountedBytes() const;
  // The bound: capacity() * kMaxBytesPerEntry (100,000 keys, the default max_keys: 12.8 MB).
  size_t maxBytes() const { return capacity() * kMaxBytesPerEntry; }

 private:
  struct KeyHash {
    size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
  };
  struct Entry {
    Hash128 key;
    int64_t tat;
  };
  using Lru = std::list<Entry>;
  using Index = std::unordered_map<Hash128, Lru::iterator, KeyHash>;
  struct Shard {
    mutable std::mutex mu;
    Lru lru;  // front = most recently used
    Index index;
  };

  Hash128 hashOf(std::string_view key) const { return sipHash128(processSipKey(), key); }
  Shard& shardFor(const Hash128& h) const;

  const BucketParams params_;
  size_t shard_count_;
  size_t per_shard_cap_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace cutover
