#include "proxy/stats.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "policy/circuit_breaker.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"

namespace cutover {

namespace {
constexpr const char* kNone = "(none)";

const std::array<int64_t, StatsCell::kBuckets>& bounds() {
  static const std::array<int64_t, StatsCell::kBuckets> table = [] {
    std::array<int64_t, StatsCell::kBuckets> t{};
    for (size_t i = 0; i < t.size(); ++i) {
      t[i] = static_cast<int64_t>(std::llround(100.0 * std::pow(1.25, static_cast<double>(i))));
    }
    return t;
  }();
  return table;
}

size_t bucketFor(int64_t us) {
  const auto& t = bounds();
  auto it = std::lower_bound(t.begin(), t.end(), us);
  return it == t.end() ? t.size() - 1 : static_cast<size_t>(it - t.begin());
}

void appendDouble(std::string& out, double v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", v);
  out += buf;
}

// `"key":ratio` of part/whole, or null without data.
void appendRate(std::string& out, const char* key, uint64_t part, uint64_t whole) {
  out += ",\"";
  out += key;
  out += "\":";
  if (whole > 0) {
    appendDouble(out, static_cast<double>(part) / static_cast<double>(whole));
  } else {
    out += "null";
  }
}
}  // namespace

int64_t StatsCell::bucketUpperUs(size_t i) { return bounds()[i]; }

void StatsCell::record(uint16_t status, int64_t duration_ns, bool rate_limited) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (status > 0 && status < 500) successes_.fetch_add(1, std::memory_order_relaxed);
  if (rate_limited) rate_limited_.fetch_add(1, std::memory_order_relaxed);
  int64_t us = duration_ns / 1000;
  if (us < 0) us = 0;
  latency_sum_us_.fetch_add(static_cast<uint64_t>(us), std::memory_order_relaxed);
  hist_[bucketFor(us)].fetch_add(1, std::memory_order_relaxed);
}

void StatsCell::recordAttempt(bool success) {
  attempts_.fetch_add(1, std::memory_order_relaxed);
  if (success) attempt_successes_.fetch_add(1, std::memory_order_relaxed);
}

void StatsCell::reset() {
  attempts_.store(0, std::memory_order_relaxed);
  attempt_successes_.store(0, std::memory_order_relaxed);
  requests_.store(0, std::memory_order_relaxed);
  successes_.store(0, std::memory_order_relaxed);
  rate_limited_.store(0, std::memory_order_relaxed);
  latency_sum_us_.store(0, std::memory_order_relaxed);
  for (auto& h : hist_) h.store(0, std::memory_order_relaxed);
}

StatsCell::Totals StatsCell::totals() const {
  Totals t;
  t.requests = requests_.load(std::memory_order_relaxed);
  t.successes = successes_.load(std::memory_order_relaxed);
  t.rate_limited = rate_limited_.load(std::memory_order_relaxed);
  t.attempts = attempts_.load(std::memory_order_relaxed);
  t.attempt_successes = attempt_successes_.load(std::memory_order_relaxed);
  uint64_t sum = latency_sum_us_.load(std::memory_order_relaxed);
  uint64_t total = 0;
  std::array<uint64_t, kBuckets> h{};
  for (size_t i = 0; i < kBuckets; ++i) {
    h[i] = hist_[i].load(std::memory_order_relaxed);
    total += h[i];
  }
  if (total > 0) {
    t.avg_ms = static_cast<double>(sum) / static_cast<double>(total) / 1000.0;
    uint64_t rank = static_cast<uint64_t>(std::ceil(0.99 * static_cast<double>(total)));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += h[i];
      if (seen >= rank) {
        t.p99_ms = static_cast<double>(bucketUpperUs(i)) / 1000.0;
        break;
      }
    }
  }
  return t;
}

void SnapshotStats::record(const StreamInfo& info) const {
  if (cells.empty()) return;
  size_t r = info.route >= 0 && static_cast<size_t>(info.route) + 1 < cells.size()
                 ? static_cast<size_t>(info.route)
                 : cells.size() - 1;
  size_t b = info.backend >= 0 && static_cast<size_t>(info.backend) < backends
                 ? static_cast<size_t>(info.backend)
                 : backends;
  int64_t d = info.end_ns > info.start_ns && info.start_ns > 0 ? info.end_ns - info.start_ns : 0;
  cells[r][b]->record(info.status, d, info.reason == Reason::RateLimited);
}

void SnapshotStats::recordAttempt(int route, uint32_t backend, bool success) const {
  if (cells.empty() || route < 0 || static_cast<size_t>(route) + 1 >= cells.size()) return;
  if (backend >= backends) return;
  cells[static_cast<size_t>(route)][backend]->recordAttempt(success);
}

StatsCell* Stats::cell(const std::string& route, const std::string& backend) {
  auto& slot = cells_[route + "|" + backend];
  if (!slot) slot = std::make_unique<StatsCell>();
  return slot.get();
}

std::shared_ptr<const SnapshotStats> Stats::forConfig(const config::Config& cfg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (since_ms_ == 0) since_ms_ = wallClockMs();
  auto s = std::make_shared<SnapshotStats>();
  s->backends = cfg.backends.size();
  std::vector<std::string> routes;
  for (const auto& r : cfg.routes) routes.push_back(r.name);
  routes.push_back(kNone);
  for (const std::string& r : routes) {
    std::vector<StatsCell*> row;
    for (const auto& b : cfg.backends) row.push_back(cell(r, b.name));
    row.push_back(cell(r, kNone));
    s->cells.push_back(std::move(row));
  }
  return s;
}

void Stats::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [k, c] : cells_) c->reset();
  since_ms_ = wallClockMs();
}

std::string Stats::json(const Snapshot& snap, int64_t now_ns) const {
  std::lock_guard<std::mutex> lock(mu_);
  const config::Config& cfg = *snap.config;
  std::string out = "{\"since\":";
  appendJsonTimestamp(out, since_ms_);
  out += ",\"generation\":" + std::to_string(snap.generation);
  out += ",\"rollback\":";
  out += snap.rollback ? "true" : "false";
  out += ",\"rollback_since\":";
  if (snap.rollback) {
    appendJsonTimestamp(out, snap.rollback_since_ms);
  } else {
    out += "null";
  }
  out += ",\"routes\":[";
  std::vector<StatsCell::Totals> per_backend(cfg.backends.size());
  for (size_t r = 0; r < cfg.routes.size(); ++r) {
    const config::Route& route = cfg.routes[r];
    if (r > 0) out += ",";
    out += "{\"name\":";
    appendJsonString(out, route.name);
    out += ",\"backends\":[";
    for (size_t i = 0; i < route.split.size(); ++i) {
      uint32_t b = route.split[i].backend;
      const std::string& bname = cfg.backends[b].name;
      auto it = cells_.find(route.name + "|" + bname);
      StatsCell::Totals t = it != cells_.end() ? it->second->totals() : StatsCell::Totals{};
      per_backend[b].requests += t.requests;
      per_backend[b].successes += t.successes;
      per_backend[b].rate_limited += t.rate_limited;
      per_backend[b].attempts += t.attempts;
      per_backend[b].attempt_successes += t.attempt_successes;
      if (i > 0) out += ",";
      out += "{\"name\":";
      appendJsonString(out, bname);
      out += ",\"weight\":" + std::to_string(route.split[i].weight);
      out += ",\"requests\":" + std::to_string(t.requests);
      out += ",\"success_rate\":";
      if (t.requests > 0) {
        appendDouble(out, static_cast<double>(t.successes) / static_cast<double>(t.requests));
      } else {
        out += "null";
      }
      out += ",\"successes\":" + std::to_string(t.successes);
      out += ",\"attempts\":" + std::to_string(t.attempts);
      out += ",\"attempt_successes\":" + std::to_string(t.attempt_successes);
      appendRate(out, "attempt_success_rate", t.attempt_successes, t.attempts);
      // Without requests there is no latency: null, not a 0.000 that reads as "fast".
      out += ",\"avg_ms\":";
      if (t.requests > 0) {
        appendDouble(out, t.avg_ms);
      } else {
        out += "null";
      }
      out += ",\"p99_ms\":";
      if (t.requests > 0) {
        appendDouble(out, t.p99_ms);
      } else {
        out += "null";
      }
      out += "}";
    }
    auto none = cells_.find(route.name + "|" + kNone);
    uint64_t limited = 0;
    for (const auto& e : route.split) {
      auto it = cells_.find(route.name + "|" + cfg.backends[e.backend].name);
      if (it != cells_.end()) limited += it->second->totals().rate_limited;
    }
    if (none != cells_.end()) limited += none->second->totals().rate_limited;
    out += "],\"rate_limited\":" + std::to_string(limited) + "}";
  }
  out += "],\"backends\":[";
  for (size_t b = 0; b < cfg.backends.size(); ++b) {
    if (b > 0) out += ",";
    out += "{\"name\":";
    appendJsonString(out, cfg.backends[b].name);
    out += ",\"requests\":" + std::to_string(per_backend[b].requests);
    out += ",\"success_rate\":";
    if (per_backend[b].requests > 0) {
      appendDouble(out, static_cast<double>(per_backend[b].successes) /
                            static_cast<double>(per_backend[b].requests));
    } else {
      out += "null";
    }
    out += ",\"attempts\":" + std::to_string(per_backend[b].attempts);
    appendRate(out, "attempt_success_rate", per_backend[b].attempt_successes,
               per_backend[b].attempts);
    const auto& breaker = snap.backends[b].breaker;
    out += ",\"breaker\":";
    if (breaker) {
      out += "\"";
      out += breakerStateName(breaker->state(now_ns));
      out += "\",\"trips\":" + std::to_string(breaker->trips());
    } else {
      out += "null,\"trips\":0";
    }
    out += "}";
  }
  out += "]}";
  return out;
}

}  // namespace cutover
