// The dashboard summary served as JSON at GET /stats: per route × backend and per backend, the
// requests, success rate, average and p99 latency and rate-limited count (the final-response view:
// a request retried from new to legacy counts once, for legacy) and the upstream attempts with
// their success rate (every attempt on the backend that made it), since start or the last
// POST /stats/reset (the figures the old application served at /api/metrics). Prometheus counters
// are separate and never reset.
//
// Cells are created by name on the main thread while a snapshot is built and never freed, so a
// snapshot caches raw pointers; the request path does a few relaxed atomic adds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"

namespace cutover {

struct Snapshot;

class StatsCell {
 public:
  // Latency buckets: upper bounds grow by 25% from 100 µs; the last is open-ended.
  static constexpr size_t kBuckets = 64;
  static int64_t bucketUpperUs(size_t i);

  void record(uint16_t status, int64_t duration_ns, bool rate_limited);
  // One upstream attempt on this cell's backend ended (cancelled ones are not recorded): success
  // is a response head below 500, failure a 5xx or a connect error, timeout, reset or bad answer.
  void recordAttempt(bool success);
  void reset();
  struct Totals {
    uint64_t requests = 0, successes = 0, rate_limited = 0;
    uint64_t attempts = 0, attempt_successes = 0;
    double avg_ms = 0, p99_ms = 0;
  };
  Totals totals() const;

 private:
  std::atomic<uint64_t> requests_{0}, successes_{0}, rate_limited_{0}, latency_sum_us_{0};
  std::atomic<uint64_t> attempts_{0}, attempt_successes_{0};
  std::array<std::atomic<uint64_t>, kBuckets> hist_{};
};

// Pointers for one snapshot: cells[route][backend slot], slot `backends` = no backend.
struct SnapshotStats {
  std::vector<std::vector<StatsCell*>> cells;
  size_t backends = 0;
  void record(const StreamInfo& info) const;
  void recordAttempt(int route, uint32_t backend, bool success) const;
};

class Stats {
 public:
  std::shared_ptr<const SnapshotStats> forConfig(const config::Config& cfg);
  void reset();
  // JSON document for the config of `snap`, with breaker states from it.
  std::string json(const Snapshot& snap, int64_t now_ns) const;

 private:
  StatsCell* cell(const std::string& route, const std::string& backend);
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<StatsCell>> cells_;
  int64_t since_ms_ = 0;
};

}  // namespace cutover
