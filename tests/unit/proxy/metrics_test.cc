// Metrics: family names and types in the exposition, snapshot children that hit exactly the right
// series, label values taken only from the config, and the lock-free duration histogram.
#include "proxy/metrics.h"

#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "config/loader.h"
#include "proxy/config_diff.h"

using namespace cutover;

namespace {

const char* kConfig = R"m(
listeners:
  - name: public
    address: 127.0.0.1:0
backends:
  legacy: { endpoints: ["127.0.0.1:9001"] }
  new: { endpoints: ["127.0.0.1:9002"] }
routes:
  - name: kibana
    match: { prefix: /api/fetch-kibana-data }
    split: { new: 10, legacy: 90 }
  - name: health
    match: { exact: /health }
    split: { legacy: 100 }
)m";

std::shared_ptr<const config::Config> load(const std::string& yaml) {
  config::LoadResult r = config::loadString(yaml, "cutover.yaml");
  for (const config::Error& e : r.errors) INFO(e.str());
  REQUIRE(r.ok());
  return r.config;
}

// The sample line for `series` (name plus exact label block), or "" if absent.
std::string line(const std::string& text, const std::string& series) {
  size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      size_t end = text.find('\n', pos);
      return text.substr(pos, end - pos);
    }
    pos += series.size();
  }
  return "";
}

std::string value(const std::string& text, const std::string& series) {
  std::string l = line(text, series);
  return l.empty() ? "absent" : l.substr(series.size() + 1);
}

}  // namespace

TEST_CASE("every family is exported with its name, type and help") {
  Metrics metrics("1.2.3");
  auto cfg = load(kConfig);
  auto snap = metrics.forConfig(*cfg);
  REQUIRE(snap != nullptr);
  metrics.setWeights(*cfg, *cfg, false);
  metrics.setConfigInfo(*cfg, 1);
  std::string text = metrics.serialize();
  const std::vector<std::pair<std::string, std::string>> families = {
      {"cutover_requests_total", "counter"},
      {"cutover_request_duration_seconds", "histogram"},
      {"cutover_upstream_connect_failures_total", "counter"},
      {"cutover_upstream_timeouts_total", "counter"},
      {"cutover_upstream_resets_total", "counter"},
      {"cutover_retries_total", "counter"},
      {"cutover_local_replies_total", "counter"},
      {"cutover_rate_limited_total", "counter"},
      {"cutover_circuit_breaker_state", "gauge"},
      {"cutover_circuit_breaker_transitions_total", "counter"},
      {"cutover_downstream_connections_active", "gauge"},
      {"cutover_upstream_connections_active", "gauge"},
      {"cutover_route_weight_percent", "gauge"},
      {"cutover_config_reloads_total", "counter"},
      {"cutover_config_generation", "gauge"},
      {"cutover_config_info", "gauge"},
      {"cutover_build_info", "gauge"},
      {"cutover_rollback_active", "gauge"},
      {"cutover_rollback_since_seconds", "gauge"},
      {"cutover_config_last_load_success", "gauge"},
      {"cutover_override_refused_total", "counter"},
  };
  for (const auto& [name, type] : families) {
    INFO(name);
    CHECK(text.find("# TYPE " + name + " " + type + "\n") != std::string::npos);
    CHECK(text.find("# HELP " + name + " ") != std::string::npos);
  }
  CHECK(value(text, "cutover_build_info{version=\"1.2.3\"}") == "1");
  CHECK(value(text, "cutover_config_info{hash=\"" + cfg->hash + "\"}") == "1");
  CHECK(value(text, "cutover_config_generation") == "1");
  // Every reason but "none" is there from the start, at zero.
  for (size_t i = 1; i < static_cast<size_t>(Reason::Count); ++i) {
    std::string reason(reasonName(static_cast<Reason>(i)));
    INFO(reason);
    CHECK(value(text, "cutover_local_replies_total{reason=\"" + reason + "\"}") == "0");
  }
  CHECK(line(text, "cutover_local_replies_total{reason=\"none\"}").empty());
}

TEST_CASE("recordRequest increments exactly the route/backend/class series and the histogram") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  auto snap = metrics.forConfig(*cfg);
  REQUIRE(snap != nullptr);

  StreamInfo ok;
  ok.route = 0;  // kibana
  ok.backend = cfg->backendIndex("new");
  ok.status = 200;
  ok.start_ns = 1'000'000'000;
  ok.end_ns = ok.start_ns + 30'000'000;  // 30 ms: in the 0.05 bucket, not in 0.025
  snap->recordRequest(ok);
  snap->recordRequest(ok);

  StreamInfo limited;
  limited.route = 0;
  limited.backend = -1;
  limited.status = 429;
  limited.reason = Reason::RateLimited;
  snap->recordRequest(limited);

  StreamInfo unrouted;
  unrouted.status = 404;
  unrouted.reason = Reason::NoRoute;
  snap->recordRequest(unrouted);

  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_requests_total{backend="new",code_class="2xx",route="kibana"})m") ==
        "2");
  CHECK(value(text,
              R"m(cutover_requests_total{backend="legacy",code_class="2xx",route="kibana"})m") ==
        "0");
  CHECK(value(text, R"m(cutover_requests_total{backend="new",code_class="5xx",route="kibana"})m") ==
        "0");
  CHECK(value(text,
              R"m(cutover_requests_total{backend="(none)",code_class="4xx",route="kibana"})m") ==
        "1");
  CHECK(value(text,
              R"m(cutover_requests_total{backend="(none)",code_class="4xx",route="(none)"})m") ==
        "1");
  CHECK(value(text, R"m(cutover_rate_limited_total{route="kibana"})m") == "1");
  CHECK(value(text, R"m(cutover_rate_limited_total{route="health"})m") == "0");
  CHECK(value(text, R"m(cutover_local_replies_total{reason="rate_limited"})m") == "1");
  CHECK(value(text, R"m(cutover_local_replies_total{reason="no_route"})m") == "1");

  CHECK(
      value(
          text,
          R"m(cutover_request_duration_seconds_bucket{backend="new",route="kibana",le="0.025"})m") ==
      "0");
  CHECK(
      value(
          text,
          R"m(cutover_request_duration_seconds_bucket{backend="new",route="kibana",le="0.05"})m") ==
      "2");
  CHECK(
      value(
          text,
          R"m(cutover_request_duration_seconds_bucket{backend="new",route="kibana",le="+Inf"})m") ==
      "2");
  CHECK(value(text, R"m(cutover_request_duration_seconds_count{backend="new",route="kibana"})m") ==
        "2");
  CHECK(value(text, R"m(cutover_request_duration_seconds_sum{backend="new",route="kibana"})m") ==
        "0.06");
}

TEST_CASE("label values come only from the config, and a reload keeps existing series") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  auto snap1 = metrics.forConfig(*cfg);
  snap1->routes[0].retries[snap1->backendSlot(cfg->backendIndex("legacy"))]->Increment();
  snap1->backends[cfg->backendIndex("new")].timeouts->Increment();

  // Same names in a new generation resolve to the same children: counts carry over.
  auto snap2 = metrics.forConfig(*cfg);
  CHECK(snap2->routes[0].retries[1] == snap1->routes[0].retries[1]);
  CHECK(snap2->backends[1].timeouts == snap1->backends[1].timeouts);

  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_retries_total{backend="legacy",route="kibana"})m") == "1");
  CHECK(value(text, R"m(cutover_upstream_timeouts_total{backend="new"})m") == "1");
  // Route and backend labels: exactly the config's names plus "(none)".
  for (const char* family : {"cutover_requests_total{", "cutover_retries_total{"}) {
    size_t pos = 0;
    while ((pos = text.find(std::string("\n") + family, pos)) != std::string::npos) {
      size_t end = text.find('}', pos);
      std::string labels = text.substr(pos, end - pos);
      INFO(labels);
      CHECK((labels.find("route=\"kibana\"") != std::string::npos ||
             labels.find("route=\"health\"") != std::string::npos ||
             labels.find("route=\"(none)\"") != std::string::npos));
      CHECK((labels.find("backend=\"new\"") != std::string::npos ||
             labels.find("backend=\"legacy\"") != std::string::npos ||
             labels.find("backend=\"(none)\"") != std::string::npos));
      pos = end;
    }
  }
  // 3 routes (kibana, health, none) x 3 backend slots x 6 classes.
  size_t series = 0;
  for (size_t pos = 0; (pos = text.find("\ncutover_requests_total{", pos)) != std::string::npos;
       ++pos) {
    ++series;
  }
  CHECK(series == 3 * 3 * kCodeClassCount);
}

TEST_CASE("weights: configured split, the effective split in a rollback, stale routes vanish") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  metrics.setWeights(*cfg, *cfg, false);
  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="new",route="kibana"})m") == "10");
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="legacy",route="kibana"})m") == "90");
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="legacy",route="health"})m") == "100");
  CHECK(value(text, "cutover_rollback_active") == "0");

  metrics.setWeights(*cfg, *withRollback(*cfg), true);
  text = metrics.serialize();
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="new",route="kibana"})m") == "0");
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="legacy",route="kibana"})m") == "100");
  CHECK(value(text, "cutover_rollback_active") == "1");

  std::string renamed = kConfig;
  renamed.replace(renamed.find("name: kibana"), 12, "name: kb");
  auto cfg2 = load(renamed);
  metrics.setWeights(*cfg2, *cfg2, false);
  text = metrics.serialize();
  CHECK(line(text, R"m(cutover_route_weight_percent{backend="new",route="kibana"})m").empty());
  CHECK(value(text, R"m(cutover_route_weight_percent{backend="new",route="kb"})m") == "10");
}

TEST_CASE("reload results, breaker transitions and the disabled switch") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  auto snap = metrics.forConfig(*cfg);
  metrics.onReloadResult(true);
  metrics.onReloadResult(false);
  metrics.onReloadResult(false);
  const BackendMetrics& bm = snap->backends[cfg->backendIndex("new")];
  bm.onBreakerTransition(BreakerState::Open);
  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_config_reloads_total{result="success"})m") == "1");
  CHECK(value(text, R"m(cutover_config_reloads_total{result="rejected"})m") == "2");
  CHECK(value(text, R"m(cutover_circuit_breaker_state{backend="new"})m") == "2");
  CHECK(value(text, R"m(cutover_circuit_breaker_transitions_total{backend="new",to="open"})m") ==
        "1");
  bm.onBreakerTransition(BreakerState::HalfOpen);
  text = metrics.serialize();
  CHECK(value(text, R"m(cutover_circuit_breaker_state{backend="new"})m") == "1");
  CHECK(
      value(text, R"m(cutover_circuit_breaker_transitions_total{backend="new",to="half_open"})m") ==
      "1");

  Metrics off("test", false);
  CHECK(off.forConfig(*cfg) == nullptr);
  CHECK(off.serialize().find("cutover_build_info") != std::string::npos);
}

TEST_CASE("duration histogram is exact under concurrent observers") {
  DurationHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 100000; ++i) h.observe(i % 2 == 0 ? 0.001 : 20.0);
    });
  }
  for (auto& t : threads) t.join();
  std::array<uint64_t, kDurationBuckets.size() + 1> counts;
  double sum = 0;
  h.read(counts, sum);
  CHECK(counts[0] == 200000);                        // <= 5 ms
  CHECK(counts[kDurationBuckets.size()] == 200000);  // +Inf
  CHECK(sum == doctest::Approx(200000 * 0.001 + 200000 * 20.0));
  CHECK(codeClassIndex(0) == 5);
  CHECK(codeClassIndex(101) == 0);
  CHECK(codeClassIndex(599) == 4);
  CHECK(codeClassIndex(600) == 5);
}

TEST_CASE("configured and effective weights part during a rollback") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  metrics.setWeights(*cfg, *withRollback(*cfg), true);
  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_route_configured_weight_percent{backend="new",route="kibana"})m") ==
        "10");
  CHECK(value(text, R"m(cutover_route_effective_weight_percent{backend="new",route="kibana"})m") ==
        "0");
  CHECK(
      value(text, R"m(cutover_route_effective_weight_percent{backend="legacy",route="kibana"})m") ==
      "100");
}

TEST_CASE("attempt series exist at zero for every outcome; failovers only between a route's own") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  auto m = metrics.forConfig(*cfg);
  std::string text = metrics.serialize();
  for (const char* o : {"1xx", "2xx", "3xx", "4xx", "5xx", "connect_error", "timeout", "reset",
                        "bad_response", "cancelled"}) {
    CHECK(value(text, std::string("cutover_upstream_attempts_total{backend=\"new\",outcome=\"") +
                          o + "\",route=\"kibana\"}") == "0");
  }
  CHECK(value(text, R"m(cutover_failovers_total{from="new",route="kibana",to="legacy"})m") == "0");
  // health splits to legacy alone: nothing to move between, no series.
  CHECK(line(text, R"m(cutover_failovers_total{from="new",route="health",to="legacy"})m").empty());
  // No attempt is ever made without a route or a backend.
  CHECK(text.find("cutover_upstream_attempts_total{backend=\"(none)\"") == std::string::npos);
  CHECK(text.find("outcome=\"2xx\",route=\"(none)\"}") == std::string::npos);
  m->recordAttempt(0, static_cast<uint32_t>(cfg->backendIndex("new")), AttemptOutcome::Status5xx);
  text = metrics.serialize();
  CHECK(value(text,
              R"m(cutover_upstream_attempts_total{backend="new",outcome="5xx",route="kibana"})m") ==
        "1");
}

TEST_CASE("process metrics, endpoint health and access-log drops are exported at scrape") {
  Metrics metrics("test");
  auto cfg = load(kConfig);
  metrics.setEndpointHealth(*cfg, {{true}, {false}});
  metrics.setAccessLogDropped(7);
  metrics.setAccessLogDropped(7);  // a total, not a delta: unchanged
  std::string text = metrics.serialize();
  CHECK(value(text, R"m(cutover_endpoint_healthy{backend="legacy",endpoint="127.0.0.1:9001"})m") ==
        "1");
  CHECK(value(text, R"m(cutover_endpoint_healthy{backend="new",endpoint="127.0.0.1:9002"})m") ==
        "0");
  CHECK(value(text, "cutover_access_log_dropped_total") == "7");
  CHECK(std::stod(value(text, "process_resident_memory_bytes")) > 1 << 20);
  CHECK(std::stod(value(text, "process_open_fds")) >= 3);
  CHECK(std::stod(value(text, "process_max_fds")) >= 64);
  CHECK(std::stod(value(text, "process_cpu_seconds_total")) >= 0);
  const double start = std::stod(value(text, "process_start_time_seconds"));
  CHECK(start > 1.6e9);
  CHECK(start <= static_cast<double>(time(nullptr)) + 1);
  CHECK(text.find("# TYPE process_cpu_seconds_total counter") != std::string::npos);
}
