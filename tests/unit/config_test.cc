// Config loader: scalar parsers, the full schema, precomputed splits, and every error reported with
// its exact file:line:col and key path.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "config/loader.h"

namespace doctest {
// Failed comparisons of error lists print the lists.
template <>
struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& lines) {
    std::string out = "{";
    for (const std::string& line : lines) out += "\n  \"" + line + "\"";
    out += "\n}";
    return out.c_str();
  }
};
}  // namespace doctest

using namespace cutover::config;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {

// Every error of a load, as printed by `cutover --check`.
std::vector<std::string> errorsOf(const std::string& yaml) {
  LoadResult result = loadString(yaml, "cutover.yaml");
  std::vector<std::string> out;
  for (const Error& error : result.errors) out.push_back(error.str());
  if (!out.empty()) CHECK(result.config == nullptr);
  return out;
}

std::shared_ptr<const Config> loadOk(const std::string& yaml) {
  LoadResult result = loadString(yaml, "cutover.yaml");
  for (const Error& error : result.errors) INFO(error.str());
  REQUIRE(result.errors.empty());
  REQUIRE(result.ok());
  return result.config;
}

// A minimal valid config; tests append to it or replace parts of it.
const std::string kListeners =
    "listeners:\n"
    "  - name: public\n"
    "    address: 127.0.0.1:8080\n";
const std::string kBackends =
    "backends:\n"
    "  legacy: { endpoints: [\"127.0.0.1:9001\"] }\n"
    "  new: { endpoints: [\"127.0.0.1:9002\"] }\n";
const std::string kRoutes =
    "routes:\n"
    "  - name: default\n"
    "    match: { prefix: / }\n"
    "    split: { new: 10, legacy: 90 }\n";

std::string sourcePath(const std::string& relative) {
  return std::string(CUTOVER_SOURCE_DIR) + "/" + relative;
}

}  // namespace

TEST_CASE("durations: integers with ms, s, m or h are accepted") {
  struct Case {
    const char* text;
    Duration expected;
  };
  const Case cases[] = {
      {"250ms", milliseconds(250)}, {"0ms", milliseconds(0)}, {"15s", seconds(15)},
      {"1m", minutes(1)},           {"90m", minutes(90)},     {"1h", hours(1)},
      {"0s", milliseconds(0)},      {"86400s", hours(24)},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    Duration out{-1};
    CHECK(parseDuration(c.text, out));
    CHECK(out == c.expected);
  }
}

TEST_CASE("durations: negatives, fractions, missing or unknown units and garbage are rejected") {
  const char* bad[] = {"",
                       "5",
                       "-5s",
                       "+5s",
                       "1.5s",
                       "5 s",
                       " 5s",
                       "5s ",
                       "s",
                       "5sec",
                       "5min",
                       "5d",
                       "5us",
                       "ms",
                       "5S",
                       "1e3ms",
                       "abc",
                       "0x10s",
                       "5ms5",
                       "99999999999999999999h",
                       "9223372036854775807s"};
  for (const char* text : bad) {
    INFO(text);
    Duration out{milliseconds(7)};
    CHECK_FALSE(parseDuration(text, out));
    CHECK(out == milliseconds(7));  // left untouched
  }
}

TEST_CASE("rates: count per second, minute or hour") {
  struct Case {
    const char* text;
    uint32_t count;
    Duration per;
  };
  const Case cases[] = {
      {"5/min", 5, minutes(1)},
      {"10/s", 10, seconds(1)},
      {"100/h", 100, hours(1)},
      {"10/m", 10, minutes(1)},
      {"7/sec", 7, seconds(1)},
      {"1/second", 1, seconds(1)},
      {"3/minute", 3, minutes(1)},
      {"2/hour", 2, hours(1)},
      {"4294967295/s", 4294967295u, seconds(1)},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    uint32_t count = 0;
    Duration per{};
    CHECK(parseRate(c.text, count, per));
    CHECK(count == c.count);
    CHECK(per == c.per);
  }
  const char* bad[] = {"",     "5",   "/s",    "5/",      "0/s",   "-5/s",         "5/d", "5 /s",
                       "5/ s", "5/S", "1.5/s", "5/min/s", "abc/s", "4294967296/s", "5/ms"};
  for (const char* text : bad) {
    INFO(text);
    uint32_t count = 99;
    Duration per{milliseconds(7)};
    CHECK_FALSE(parseRate(text, count, per));
    CHECK(count == 99);
    CHECK(per == milliseconds(7));
  }
}

TEST_CASE("socket addresses: numeric IPv4, bracketed IPv6 and localhost") {
  struct Case {
    const char* text;
    const char* normalised;
    int family;
    uint16_t port;
  };
  const Case cases[] = {
      {"127.0.0.1:9001", "127.0.0.1:9001", AF_INET, 9001},
      {"0.0.0.0:0", "0.0.0.0:0", AF_INET, 0},
      {"10.1.2.3:65535", "10.1.2.3:65535", AF_INET, 65535},
      {"localhost:8080", "127.0.0.1:8080", AF_INET, 8080},
      {"[::1]:9001", "[::1]:9001", AF_INET6, 9001},
      {"[::]:80", "[::]:80", AF_INET6, 80},
      {"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443", AF_INET6, 443},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    SocketAddress out;
    REQUIRE(parseSocketAddress(c.text, out));
    CHECK(out.text == c.normalised);
    CHECK(out.addr.ss_family == c.family);
    if (c.family == AF_INET) {
      CHECK(out.len == sizeof(sockaddr_in));
      CHECK(ntohs(reinterpret_cast<const sockaddr_in*>(&out.addr)->sin_port) == c.port);
    } else {
      CHECK(out.len == sizeof(sockaddr_in6));
      CHECK(ntohs(reinterpret_cast<const sockaddr_in6*>(&out.addr)->sin6_port) == c.port);
    }
  }
  const char* bad[] = {"",
                       "127.0.0.1",
                       "127.0.0.1:",
                       ":8080",
                       "127.0.0.1:65536",
                       "127.0.0.1:-1",
                       "127.0.0.1:http",
                       "::1:80",
                       "[::1]",
                       "[::1]80",
                       "1.2.3:80",
                       "1.2.3.4.5:80",
                       "256.1.1.1:80",
                       "example.com:80",
                       "01.2.3.4:80",
                       "127.0.0.1:123456",
                       "[fe80::1%eth0]:80",
                       "127.0.0.1:80 "};
  for (const char* text : bad) {
    INFO(text);
    SocketAddress out;
    out.text = "untouched";
    CHECK_FALSE(parseSocketAddress(text, out));
    CHECK(out.text == "untouched");
  }
}

TEST_CASE("Error::str prints file:line:col: path: message, leaving out what is unknown") {
  Error error{"cutover.yaml", 14, 7, "routes[1].split", "weights must sum to 100, got 110"};
  CHECK(error.str() == "cutover.yaml:14:7: routes[1].split: weights must sum to 100, got 110");
  Error no_path{"c.yaml", 1, 1, "", "unknown key 'x'"};
  CHECK(no_path.str() == "c.yaml:1:1: unknown key 'x'");
  Error no_line{"c.yaml", 0, 0, "", "cannot read the file: No such file or directory"};
  CHECK(no_line.str() == "c.yaml: cannot read the file: No such file or directory");
}

TEST_CASE("a minimal config gets every default") {
  auto config = loadOk(kListeners + kBackends + kRoutes);
  CHECK(config->file == "cutover.yaml");
  CHECK(config->workers == 1);
  REQUIRE(config->listeners.size() == 1);
  CHECK(config->listeners[0].name == "public");
  CHECK(config->listeners[0].address.text == "127.0.0.1:8080");
  CHECK(config->timeouts.connect == seconds(5));
  CHECK(config->timeouts.header_read == seconds(10));
  CHECK(config->timeouts.request == seconds(60));
  CHECK(config->timeouts.downstream_idle == seconds(60));
  CHECK(config->timeouts.upstream_idle == seconds(60));
  CHECK(config->timeouts.drain == seconds(20));
  CHECK(config->timeouts.drain_delay == seconds(5));
  CHECK(config->limits.max_header_bytes == 65536);
  CHECK(config->limits.max_uri_bytes == 8192);
  CHECK(config->limits.max_response_header_bytes == 65536);
  CHECK(config->limits.high_watermark == 1048576);
  CHECK(config->limits.max_connections_per_worker == 1024);
  CHECK(config->limits.max_request_body_bytes == 0);  // unlimited
  CHECK(config->override_header.empty());
  CHECK(config->filters == std::vector<std::string>{"request_id", "rate_limit", "router"});
  CHECK_FALSE(config->rate_limit.has_value());
  REQUIRE(config->backends.size() == 2);
  CHECK(config->backends[0].name == "legacy");  // order as written
  CHECK(config->backends[1].name == "new");
  CHECK(config->backends[0].pool == Pool{});
  CHECK(config->backends[0].circuit_breaker == CircuitBreaker{});
  CHECK_FALSE(config->backends[0].circuit_breaker.enabled);
  CHECK(config->backends[0].health_check == HealthCheck{});
  CHECK_FALSE(config->backends[0].health_check.enabled);
  CHECK_FALSE(config->backends[0].rate_limit.has_value());
  REQUIRE(config->routes.size() == 1);
  const Route& route = config->routes[0];
  CHECK(route.match.kind == RouteMatch::Kind::Prefix);
  CHECK(route.match.path == "/");
  CHECK(route.sticky.kind == Sticky::Kind::None);
  CHECK_FALSE(route.fallback.has_value());
  CHECK_FALSE(route.retry.enabled);
  CHECK_FALSE(route.rate_limit.has_value());
  CHECK_FALSE(route.request_timeout.has_value());
  CHECK(config->admin.enabled);
  CHECK(config->admin.address.text == "127.0.0.1:9901");
  CHECK(config->access_log.mode == AccessLog::Mode::All);
  CHECK(config->access_log.path.empty());
  CHECK(config->access_log.sample == 1.0);
  CHECK(config->backendIndex("legacy") == 0);
  CHECK(config->backendIndex("new") == 1);
  CHECK(config->backendIndex("nope") == -1);
}

namespace {

const std::string kFull = R"(listeners:
  - name: public
    address: 0.0.0.0:8080
  - name: internal
    address: "[::1]:8081"
workers: 4
timeouts:
  connect: 250ms
  header_read: 3s
  request: 2m
  downstream_idle: 1h
  upstream_idle: 45s
  drain: 0s
  drain_delay: 0s
limits:
  max_header_bytes: 32KiB
  max_uri_bytes: 4096
  max_response_header_bytes: 1MiB
  high_watermark: 2MiB
  max_connections_per_worker: 5000
  max_request_body_bytes: 10GiB
override_header: X-Cutover-Backend
filters: [rate_limit, request_id, router]
rate_limit:
  rate: 200/min
  burst: 50
  key: { header: X-User-Id }
  mode: dry_run
  response_headers: false
  max_keys: 1000
backends:
  legacy:
    endpoints: ["127.0.0.1:9001"]
  canary:
    endpoints: ["localhost:9003"]
  new:
    endpoints: ["127.0.0.1:9002", "[::1]:9004"]
    pool: { max_idle_per_endpoint: 8, idle_timeout: 10s }
    circuit_breaker:
      consecutive_failures: 3
      cooldown: 30s
      max_cooldown: 2m
      multiplier: 2
      jitter: 0.1
      half_open_probes: 2
      failure_on: [connect_error, 5xx, 429, 418]
      max_connections: 100
      max_pending: 10
      max_inflight: 50
    health_check:
      path: /ready
      interval: 2s
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 4
      backoff_base: 2s
      backoff_max: 1m
    rate_limit: { rate: 50/s, key: route }
routes:
  - name: kibana
    match: { prefix: /api/fetch-kibana-data, header: { name: X-Env, value: prod } }
    split: { legacy: 70, canary: 0, new: 30 }
    sticky: { cookie: session_id }
    fallback: legacy
    timeout: 30s
    retry:
      attempts: 2
      on: [reset, 502, 504]
      idempotent_only: false
      backoff_base: 10ms
      backoff_max: 1s
      retry_on_other_backend: true
      budget_ratio: 0.5
      budget_min: 1
    rate_limit: { rate: 10/min }
  - name: health
    match: { exact: /health, header: { name: x-probe } }
    split: { legacy: 100 }
    sticky: { header: X-User-Id }
  - name: default
    match: { prefix: / }
    split: { new: 10, legacy: 90 }
    sticky: { client_ip: true }
    retry: {}
admin:
  address: 127.0.0.1:9911
  token_file: /etc/cutover/token
  token_env: CUTOVER_ADMIN_TOKEN
  enabled: false
access_log: { mode: sampled, path: /var/log/cutover.log, sample: 0.25 }
)";

void checkFull(const Config& config) {
  REQUIRE(config.listeners.size() == 2);
  CHECK(config.listeners[0].address.text == "0.0.0.0:8080");
  CHECK(config.listeners[1].name == "internal");
  CHECK(config.listeners[1].address.text == "[::1]:8081");
  CHECK(config.listeners[1].address.addr.ss_family == AF_INET6);
  CHECK(config.workers == 4);
  CHECK(config.timeouts.connect == milliseconds(250));
  CHECK(config.timeouts.header_read == seconds(3));
  CHECK(config.timeouts.request == minutes(2));
  CHECK(config.timeouts.downstream_idle == hours(1));
  CHECK(config.timeouts.upstream_idle == seconds(45));
  CHECK(config.timeouts.drain == milliseconds(0));
  CHECK(config.timeouts.drain_delay == milliseconds(0));
  CHECK(config.limits.max_header_bytes == 32 * 1024);
  CHECK(config.limits.max_uri_bytes == 4096);
  CHECK(config.limits.max_response_header_bytes == 1024 * 1024);
  CHECK(config.limits.high_watermark == 2 * 1024 * 1024);
  CHECK(config.limits.max_connections_per_worker == 5000);
  CHECK(config.limits.max_request_body_bytes == 10ull * 1024 * 1024 * 1024);  // past 32 bits
  CHECK(config.override_header == "x-cutover-backend");
  CHECK(config.filters == std::vector<std::string>{"rate_limit", "request_id", "router"});

  REQUIRE(config.rate_limit.has_value());
  CHECK(config.rate_limit->rate == 200);
  CHECK(config.rate_limit->per == minutes(1));
  CHECK(config.rate_limit->burst == 50);
  CHECK(config.rate_limit->key == RateLimit::Key::Header);
  CHECK(config.rate_limit->header == "x-user-id");
  CHECK(config.rate_limit->mode == RateLimit::Mode::DryRun);
  CHECK_FALSE(config.rate_limit->response_headers);
  CHECK(config.rate_limit->max_keys == 1000);

  REQUIRE(config.backends.size() == 3);
  CHECK(config.backends[1].name == "canary");
  CHECK(config.backends[1].endpoints[0].text == "127.0.0.1:9003");
  const Backend& fresh = config.backends[2];
  CHECK(fresh.name == "new");
  REQUIRE(fresh.endpoints.size() == 2);
  CHECK(fresh.endpoints[0].text == "127.0.0.1:9002");
  CHECK(fresh.endpoints[1].text == "[::1]:9004");
  CHECK(fresh.pool.max_idle_per_endpoint == 8);
  CHECK(fresh.pool.idle_timeout == seconds(10));
  const CircuitBreaker& cb = fresh.circuit_breaker;
  CHECK(cb.enabled);
  CHECK(cb.consecutive_failures == 3);
  CHECK(cb.cooldown == seconds(30));
  CHECK(cb.max_cooldown == minutes(2));
  CHECK(cb.cooldown_multiplier == 2.0);
  CHECK(cb.jitter == 0.1);
  CHECK(cb.half_open_probes == 2);
  CHECK(cb.on_connect_error);
  CHECK_FALSE(cb.on_timeout);  // failure_on replaces the defaults
  CHECK_FALSE(cb.on_reset);
  CHECK(cb.on_5xx);
  CHECK(cb.on_status == std::vector<uint16_t>{429, 418});
  CHECK(cb.max_connections == 100);
  CHECK(cb.max_pending == 10);
  CHECK(cb.max_inflight == 50);
  const HealthCheck& hc = fresh.health_check;
  CHECK(hc.enabled);
  CHECK(hc.path == "/ready");
  CHECK(hc.interval == seconds(2));
  CHECK(hc.timeout == milliseconds(500));
  CHECK(hc.healthy_threshold == 1);
  CHECK(hc.unhealthy_threshold == 4);
  CHECK(hc.backoff_base == seconds(2));
  CHECK(hc.backoff_max == minutes(1));
  REQUIRE(fresh.rate_limit.has_value());
  CHECK(fresh.rate_limit->rate == 50);
  CHECK(fresh.rate_limit->per == seconds(1));
  CHECK(fresh.rate_limit->burst == 50);  // burst defaults to the rate
  CHECK(fresh.rate_limit->key == RateLimit::Key::Route);

  REQUIRE(config.routes.size() == 3);
  const Route& kibana = config.routes[0];
  CHECK(kibana.name == "kibana");
  CHECK(kibana.match.kind == RouteMatch::Kind::Prefix);
  CHECK(kibana.match.path == "/api/fetch-kibana-data");
  CHECK(kibana.match.header == "x-env");
  CHECK(kibana.match.header_value == "prod");
  // new first, then the others as written; the zero-weight entry stays.
  REQUIRE(kibana.split.size() == 3);
  CHECK(kibana.split[0].backend == 2);
  CHECK(kibana.split[0].weight == 30);
  CHECK(kibana.split[1].backend == 0);
  CHECK(kibana.split[1].weight == 70);
  CHECK(kibana.split[2].backend == 1);
  CHECK(kibana.split[2].weight == 0);
  CHECK(kibana.thresholds == std::vector<uint32_t>{3000, 10000, 10000});
  CHECK(kibana.sticky.kind == Sticky::Kind::Cookie);
  CHECK(kibana.sticky.name == "session_id");
  CHECK(kibana.fallback == std::optional<uint32_t>(0));
  CHECK(kibana.request_timeout == std::optional<Duration>(seconds(30)));
  const Retry& retry = kibana.retry;
  CHECK(retry.enabled);
  CHECK(retry.attempts == 2);
  CHECK_FALSE(retry.on_connect_error);  // `on` replaces the defaults
  CHECK(retry.on_reset);
  CHECK_FALSE(retry.on_timeout);
  CHECK(retry.on_status == std::vector<uint16_t>{502, 504});
  CHECK_FALSE(retry.idempotent_only);
  CHECK(retry.backoff_base == milliseconds(10));
  CHECK(retry.backoff_max == seconds(1));
  CHECK(retry.retry_on_other_backend);
  CHECK(retry.budget_ratio == 0.5);
  CHECK(retry.budget_min == 1);
  REQUIRE(kibana.rate_limit.has_value());
  CHECK(kibana.rate_limit->rate == 10);
  CHECK(kibana.rate_limit->per == minutes(1));
  CHECK(kibana.rate_limit->burst == 10);
  CHECK(kibana.rate_limit->key == RateLimit::Key::ClientIp);
  CHECK(kibana.rate_limit->mode == RateLimit::Mode::Enforce);
  CHECK(kibana.rate_limit->response_headers);
  CHECK(kibana.rate_limit->max_keys == 100000);

  const Route& health = config.routes[1];
  CHECK(health.match.kind == RouteMatch::Kind::Exact);
  CHECK(health.match.path == "/health");
  CHECK(health.match.header == "x-probe");
  CHECK(health.match.header_value.empty());
  REQUIRE(health.split.size() == 1);
  CHECK(health.split[0].backend == 0);
  CHECK(health.thresholds == std::vector<uint32_t>{10000});
  CHECK(health.sticky.kind == Sticky::Kind::Header);
  CHECK(health.sticky.name == "x-user-id");
  CHECK_FALSE(health.retry.enabled);

  const Route& fallback_route = config.routes[2];
  CHECK(fallback_route.sticky.kind == Sticky::Kind::ClientIp);
  CHECK(fallback_route.retry.enabled);  // `retry: {}` turns on the defaults
  CHECK(fallback_route.retry.attempts == 1);
  CHECK(fallback_route.retry.on_connect_error);
  CHECK(fallback_route.retry.on_reset);
  CHECK(fallback_route.retry.on_timeout);
  CHECK(fallback_route.retry.on_status == std::vector<uint16_t>{502, 503, 504});
  CHECK(fallback_route.retry.budget_ratio == 0.2);
  CHECK(fallback_route.retry.budget_min == 3);

  CHECK_FALSE(config.admin.enabled);
  CHECK(config.admin.address.text == "127.0.0.1:9911");
  CHECK(config.admin.token_file == "/etc/cutover/token");
  CHECK(config.admin.token_env == "CUTOVER_ADMIN_TOKEN");
  CHECK(config.access_log.mode == AccessLog::Mode::Sampled);
  CHECK(config.access_log.path == "/var/log/cutover.log");
  CHECK(config.access_log.sample == 0.25);
}

}  // namespace

TEST_CASE("a config using every field loads exactly as written") {
  auto config = loadOk(kFull);
  checkFull(*config);
  CHECK(config->hash.size() == 16);
}

TEST_CASE("dumpYaml writes every default and loads back to the same config") {
  auto config = loadOk(kFull);
  std::string dumped = dumpYaml(*config);
  INFO(dumped);
  CHECK(dumped.find("filters: [rate_limit, request_id, router]") != std::string::npos);
  CHECK(dumped.find("connect: 250ms") != std::string::npos);
  CHECK(dumped.find("request: 2m") != std::string::npos);
  CHECK(dumped.find("split: {new: 30, legacy: 70, canary: 0}") != std::string::npos);
  auto reloaded = loadOk(dumped);
  checkFull(*reloaded);
  CHECK(dumpYaml(*reloaded) == dumped);  // a fixed point

  auto minimal = loadOk(kListeners + kBackends + kRoutes);
  std::string minimal_dump = dumpYaml(*minimal);
  INFO(minimal_dump);
  // Defaults are explicit, including sections that are off.
  CHECK(minimal_dump.find("drain: 20s") != std::string::npos);
  CHECK(minimal_dump.find("drain_delay: 5s") != std::string::npos);
  CHECK(minimal_dump.find("high_watermark: 1048576") != std::string::npos);
  CHECK(minimal_dump.find("override_header: ~") != std::string::npos);
  CHECK(minimal_dump.find("enabled: false") != std::string::npos);
  CHECK(minimal_dump.find("address: 127.0.0.1:9901") != std::string::npos);
  CHECK(dumpYaml(*loadOk(minimal_dump)) == minimal_dump);
}

TEST_CASE("limits.max_request_body_bytes: a size, 0 = unlimited, errors name the key") {
  const auto body = [](const std::string& value) {
    return kListeners + "limits: { max_request_body_bytes: " + value + " }\n" + kBackends + kRoutes;
  };
  CHECK(loadOk(body("0"))->limits.max_request_body_bytes == 0);
  CHECK(loadOk(body("65536"))->limits.max_request_body_bytes == 65536);
  CHECK(loadOk(body("1MiB"))->limits.max_request_body_bytes == 1024 * 1024);
  CHECK(loadOk(body("1024GiB"))->limits.max_request_body_bytes == 1ull << 40);
  CHECK(dumpYaml(*loadOk(body("1MiB"))).find("max_request_body_bytes: 1048576") !=
        std::string::npos);
  CHECK(errorsOf(body("lots")) ==
        std::vector<std::string>{
            "cutover.yaml:4:35: limits.max_request_body_bytes: expected a size in bytes like "
            "65536, 64KiB or 1MiB, got 'lots'"});
  CHECK(errorsOf(body("-1")) ==
        std::vector<std::string>{
            "cutover.yaml:4:35: limits.max_request_body_bytes: expected a size in bytes like "
            "65536, 64KiB or 1MiB, got '-1'"});
  CHECK(errorsOf(body("1025GiB")) ==
        std::vector<std::string>{
            "cutover.yaml:4:35: limits.max_request_body_bytes: must be 0..1024GiB, got 1025GiB"});
  // Another proxy's spelling is an unknown key here, not silently ignored.
  CHECK(errorsOf(kListeners + "limits: { max_body_bytes: 1MiB }\n" + kBackends + kRoutes) ==
        std::vector<std::string>{"cutover.yaml:4:11: limits: unknown key 'max_body_bytes'"});
}

TEST_CASE("split: new owns the low buckets and thresholds are cumulative weight x 100") {
  auto config = loadOk(kListeners +
                       "backends:\n"
                       "  legacy: { endpoints: [\"127.0.0.1:9001\"] }\n"
                       "  other: { endpoints: [\"127.0.0.1:9003\"] }\n"
                       "  new: { endpoints: [\"127.0.0.1:9002\"] }\n"
                       "routes:\n"
                       "  - name: a\n"
                       "    match: { prefix: /a }\n"
                       "    split: { legacy: 60, other: 15, new: 25 }\n"
                       "  - name: b\n"
                       "    match: { prefix: /b }\n"
                       "    split: { other: 100, new: 0 }\n"
                       "  - name: c\n"
                       "    match: { prefix: / }\n"
                       "    split: { legacy: 100 }\n");
  const Route& a = config->routes[0];
  REQUIRE(a.split.size() == 3);
  CHECK(config->backends[a.split[0].backend].name == "new");
  CHECK(config->backends[a.split[1].backend].name == "legacy");
  CHECK(config->backends[a.split[2].backend].name == "other");
  CHECK(a.thresholds == std::vector<uint32_t>{2500, 8500, 10000});
  const Route& b = config->routes[1];
  REQUIRE(b.split.size() == 2);
  CHECK(config->backends[b.split[0].backend].name == "new");
  CHECK(b.split[0].weight == 0);
  CHECK(b.thresholds == std::vector<uint32_t>{0, 10000});  // no bucket is < 0: new gets nothing
  CHECK(config->routes[2].thresholds == std::vector<uint32_t>{10000});
}

TEST_CASE("workers: auto is the core count, clamped to 1..64") {
  auto config = loadOk(kListeners + "workers: auto\n" + kBackends + kRoutes);
  CHECK(config->workers >= 1);
  CHECK(config->workers <= 64);
  unsigned cores = std::thread::hardware_concurrency();
  if (cores >= 1 && cores <= 64) CHECK(config->workers == cores);
}

TEST_CASE("errors carry the exact file:line:col and key path") {
  SUBCASE("weights summing to 110") {
    CHECK(errorsOf(kListeners + kBackends +
                   "routes:\n"
                   "  - name: default\n"
                   "    match: { prefix: / }\n"
                   "    split: { new: 20, legacy: 90 }\n") ==
          std::vector<std::string>{
              "cutover.yaml:10:12: routes[0].split: weights must sum to 100, got 110"});
  }
  SUBCASE("a weight out of range") {
    CHECK(errorsOf(kListeners + kBackends +
                   "routes:\n"
                   "  - name: default\n"
                   "    match: { prefix: / }\n"
                   "    split: { new: 140, legacy: -40 }\n") ==
          std::vector<std::string>{
              "cutover.yaml:10:19: routes[0].split.new: must be 0..100, got 140",
              "cutover.yaml:10:32: routes[0].split.legacy: must be 0..100, got -40"});
  }
  SUBCASE("unknown keys, at top level and nested, pointing at the key") {
    CHECK(errorsOf(kListeners + "tiemouts: { connect: 5s }\n" + kBackends + kRoutes +
                   "    splt: { new: 1 }\n") ==
          std::vector<std::string>{
              "cutover.yaml:4:1: unknown key 'tiemouts' (did you mean 'timeouts'?)",
              "cutover.yaml:12:5: routes[0]: unknown key 'splt' (did you mean 'split'?)"});
  }
  SUBCASE("bad durations") {
    CHECK(errorsOf(kListeners + "timeouts:\n  connect: 5\n  request: 1.5s\n  drain: 2h\n" +
                   kBackends + kRoutes) ==
          std::vector<std::string>{
              "cutover.yaml:5:12: timeouts.connect: expected a duration like 250ms, 15s, 1m or "
              "1h, got '5'",
              "cutover.yaml:6:12: timeouts.request: expected a duration like 250ms, 15s, 1m or "
              "1h, got '1.5s'",
              "cutover.yaml:7:10: timeouts.drain: must be 0s..1h, got 2h"});
    CHECK(errorsOf(kListeners + "timeouts:\n  drain_delay: 20m\n  drain_dealy: 1s\n" + kBackends +
                   kRoutes) ==
          std::vector<std::string>{
              "cutover.yaml:5:16: timeouts.drain_delay: must be 0s..10m, got 20m",
              "cutover.yaml:6:3: timeouts: unknown key 'drain_dealy' (did you mean "
              "'drain_delay'?)"});
  }
  SUBCASE("an unknown backend in a split and as fallback") {
    CHECK(errorsOf(kListeners + kBackends +
                   "routes:\n"
                   "  - name: default\n"
                   "    match: { prefix: / }\n"
                   "    split: { neu: 10, legacy: 90 }\n"
                   "    fallback: old\n") ==
          std::vector<std::string>{
              "cutover.yaml:10:14: routes[0].split.neu: unknown backend 'neu' (backends: legacy, "
              "new)",
              "cutover.yaml:11:15: routes[0].fallback: unknown backend 'old' (backends: legacy, "
              "new)"});
  }
  SUBCASE("missing listeners") {
    CHECK(errorsOf(kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:1:1: missing required key 'listeners'"});
  }
  SUBCASE("empty listeners") {
    CHECK(errorsOf("listeners: []\n" + kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:1:12: listeners: expected a sequence of at "
                                   "least one listener, got an empty sequence"});
  }
  SUBCASE("duplicate route names") {
    CHECK(errorsOf(kListeners + kBackends + kRoutes +
                   "  - name: default\n"
                   "    match: { exact: /x }\n"
                   "    split: { legacy: 100 }\n") ==
          std::vector<std::string>{
              "cutover.yaml:11:11: routes[1].name: duplicate route name 'default'"});
  }
  SUBCASE("bad workers") {
    CHECK(errorsOf(kListeners + "workers: lots\n" + kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:4:10: workers: expected an integer, got 'lots'"});
    CHECK(errorsOf(kListeners + "workers: 65\n" + kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:4:10: workers: must be 1..64, got 65"});
    CHECK(errorsOf(kListeners + "workers: 0\n" + kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:4:10: workers: must be 1..64, got 0"});
  }
  SUBCASE("router not last, unknown and duplicate filters") {
    CHECK(
        errorsOf(kListeners + "filters: [router, rate_limit]\n" + kBackends + kRoutes) ==
        std::vector<std::string>{"cutover.yaml:4:11: filters[0]: router must be the last filter"});
    CHECK(
        errorsOf(kListeners + "filters: [rate_limit, auth, rate_limit]\n" + kBackends + kRoutes) ==
        std::vector<std::string>{
            "cutover.yaml:4:10: filters: the chain must end with 'router'",
            "cutover.yaml:4:23: filters[1]: unknown filter 'auth' (known: request_id, "
            "rate_limit, router)",
            "cutover.yaml:4:29: filters[2]: duplicate filter 'rate_limit'"});
  }
  SUBCASE("a rate limit without the rate_limit filter would never apply") {
    CHECK(errorsOf(kListeners + "filters: [router]\n" + kBackends + kRoutes +
                   "    rate_limit: { rate: 5/min }\n") ==
          std::vector<std::string>{
              "cutover.yaml:12:17: routes[0].rate_limit: the 'rate_limit' filter is not in "
              "filters, so this limit would never apply"});
  }
  SUBCASE("a string where a number is expected") {
    CHECK(errorsOf(kListeners + "limits: { max_header_bytes: abc }\n" + kBackends + kRoutes) ==
          std::vector<std::string>{
              "cutover.yaml:4:29: limits.max_header_bytes: expected a size in bytes like 65536, "
              "64KiB or 1MiB, got 'abc'"});
    CHECK(errorsOf(kListeners + kBackends + kRoutes + "    retry: { attempts: two }\n") ==
          std::vector<std::string>{
              "cutover.yaml:11:24: routes[0].retry.attempts: expected an integer, got 'two'"});
  }
  SUBCASE("an address that needs DNS, and a bad port") {
    CHECK(errorsOf("listeners:\n  - name: public\n    address: db.internal:8080\n" + kBackends +
                   kRoutes) ==
          std::vector<std::string>{
              "cutover.yaml:3:14: listeners[0].address: 'db.internal:8080' needs a DNS lookup, "
              "which would block: use a numeric IP address (only 'localhost' is understood)"});
    CHECK(errorsOf(kListeners + "backends:\n  legacy: { endpoints: [\"127.0.0.1:90010\"] }\n" +
                   kRoutes) ==
          std::vector<std::string>{
              "cutover.yaml:5:25: backends.legacy.endpoints[0]: port must be 0..65535, got 90010",
              "cutover.yaml:9:14: routes[0].split.new: unknown backend 'new' (backends: "
              "legacy)"});
  }
  SUBCASE("match needs exactly one of prefix or exact; sticky exactly one kind") {
    CHECK(errorsOf(kListeners + kBackends +
                   "routes:\n"
                   "  - name: default\n"
                   "    match: { prefix: /, exact: /x }\n"
                   "    split: { legacy: 100 }\n"
                   "    sticky: { cookie: a, client_ip: true }\n") ==
          std::vector<std::string>{
              "cutover.yaml:9:12: routes[0].match: needs exactly one of 'prefix' or 'exact'",
              "cutover.yaml:11:13: routes[0].sticky: needs exactly one of 'cookie', 'header' or "
              "'client_ip'"});
  }
  SUBCASE("429 is never retried") {
    CHECK(errorsOf(kListeners + kBackends + kRoutes + "    retry: { on: [503, 429] }\n") ==
          std::vector<std::string>{"cutover.yaml:11:24: routes[0].retry.on[1]: 429 is never "
                                   "retried: the backend asked for fewer requests, not more"});
  }
  SUBCASE("cross-field ranges") {
    CHECK(errorsOf(kListeners + "backends:\n"
                                "  legacy:\n"
                                "    endpoints: [\"127.0.0.1:9001\"]\n"
                                "    circuit_breaker: { cooldown: 10s, max_cooldown: 5s }\n"
                                "    health_check: { interval: 1s, timeout: 2s }\n"
                                "routes:\n"
                                "  - name: default\n"
                                "    match: { prefix: / }\n"
                                "    split: { legacy: 100 }\n") ==
          std::vector<std::string>{
              "cutover.yaml:7:53: backends.legacy.circuit_breaker.max_cooldown: must be at least "
              "cooldown (10s), got 5s",
              "cutover.yaml:8:44: backends.legacy.health_check.timeout: must not exceed interval "
              "(1s), got 2s"});
  }
  SUBCASE("a duplicate key") {
    CHECK(errorsOf(kListeners + "workers: 2\nworkers: 3\n" + kBackends + kRoutes) ==
          std::vector<std::string>{"cutover.yaml:5:1: duplicate key 'workers'"});
  }
}

TEST_CASE("all errors of a file are collected, in file order") {
  const std::string yaml = R"(listeners:
  - name: public
    address: 127.0.0.1:99999
workers: 0
timeouts: { connect: fast }
backends:
  legacy: { endpoints: [] }
routes:
  - name: kibana
    match: { prefix: api }
    split: { legacy: 90, new: 20 }
    retry: { budget_ratio: 2 }
  - name: default
    split: { legacy: 100 }
access_log: { mode: loud }
)";
  CHECK(errorsOf(yaml) ==
        std::vector<std::string>{
            "cutover.yaml:3:14: listeners[0].address: port must be 0..65535, got 99999",
            "cutover.yaml:4:10: workers: must be 1..64, got 0",
            "cutover.yaml:5:22: timeouts.connect: expected a duration like 250ms, 15s, 1m or 1h, "
            "got 'fast'",
            "cutover.yaml:7:24: backends.legacy.endpoints: expected a sequence of at least one "
            "address, got an empty sequence",
            "cutover.yaml:10:22: routes[0].match.prefix: expected a path starting with '/' without "
            "spaces, got 'api'",
            "cutover.yaml:11:12: routes[0].split: weights must sum to 100, got 110",
            "cutover.yaml:11:26: routes[0].split.new: unknown backend 'new' (backends: legacy)",
            "cutover.yaml:12:28: routes[0].retry.budget_ratio: must be 0..1, got 2",
            "cutover.yaml:13:5: routes[1]: missing required key 'match'",
            "cutover.yaml:15:21: access_log.mode: expected all, off, errors or sampled, got 'loud'",
        });
}

TEST_CASE("a YAML syntax error is reported once with its line and column") {
  CHECK(errorsOf("listeners:\n  - name: public\n    address: [127.0.0.1:8080\nworkers: 1\n") ==
        std::vector<std::string>{
            "cutover.yaml:4:8: YAML syntax error: end of sequence flow not found"});
  CHECK(errorsOf("a: b: c\n") ==
        std::vector<std::string>{"cutover.yaml:1:5: YAML syntax error: illegal map value"});
}

TEST_CASE("odd documents: empty, not a map, several documents") {
  CHECK(errorsOf("") == std::vector<std::string>{
                            "cutover.yaml:1:1: the file is empty: expected a map with listeners, "
                            "backends and routes"});
  CHECK(errorsOf("- a\n- b\n") ==
        std::vector<std::string>{"cutover.yaml:1:1: expected a map, got a sequence"});
  CHECK(errorsOf(kListeners + kBackends + kRoutes + "---\nworkers: 2\n") ==
        std::vector<std::string>{"cutover.yaml:11:1: only one YAML document is allowed per file"});
  // yaml-cpp 0.7 would loop (and allocate) forever on these in LoadAll: the loader must not.
  CHECK(errorsOf(",a\n") ==
        std::vector<std::string>{"cutover.yaml:1:1: YAML syntax error: unexpected ','"});
  CHECK(errorsOf(kListeners + ",\n") ==
        std::vector<std::string>{"cutover.yaml:4:1: YAML syntax error: end of map not found"});
}

TEST_CASE("loadString never throws, whatever the bytes") {
  std::mt19937 rng(12345);
  const std::string base = kListeners + kBackends + kRoutes;
  const std::string alphabet = "{}[]:,-#&*!|>'\"%@` \n\tabc019/";
  for (int i = 0; i < 2000; ++i) {
    std::string text = base;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % text.size();
      text[at] = alphabet[rng() % alphabet.size()];
    }
    LoadResult result;
    CHECK_NOTHROW(result = loadString(text, "fuzz.yaml"));
    CHECK(result.ok() != !result.errors.empty());
    for (const Error& error : result.errors) {
      INFO(text);
      CHECK(error.message.find("cannot load") == std::string::npos);  // no exception escaped
    }
  }
}

TEST_CASE("loadFile: an unreadable file is one error without a position") {
  LoadResult result = loadFile("/nonexistent/cutover.yaml");
  REQUIRE(result.errors.size() == 1);
  CHECK_FALSE(result.ok());
  CHECK(result.errors[0].line == 0);
  CHECK(result.errors[0].str() ==
        "/nonexistent/cutover.yaml: cannot read the file: No such file or directory");
}

TEST_CASE("loadFile refuses a FIFO at once and a file over 16 MiB") {
  char tmpl[] = "/tmp/cutover_cfg_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string fifo = dir + "/fifo.yaml";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  LoadResult result = loadFile(fifo);  // would wait for a writer forever without O_NONBLOCK
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].str() == fifo + ": cannot read the file: not a regular file (a FIFO)");

  result = loadFile(dir);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].str() == dir + ": cannot read the file: not a regular file (a directory)");

  const std::string big = dir + "/big.yaml";
  const int fd = ::open(big.c_str(), O_CREAT | O_WRONLY, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 16 * 1024 * 1024 + 1) == 0);  // sparse: no 16 MiB written
  ::close(fd);
  result = loadFile(big);
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].str() == big + ": cannot read the file: larger than 16 MiB");
  ::unlink(big.c_str());
  ::unlink(fifo.c_str());
  ::rmdir(dir.c_str());
}

namespace {

// A temporary token file, removed at the end of the test.
struct TokenFile {
  std::string path;
  explicit TokenFile(const std::string& contents) {
    char tmpl[] = "/tmp/cutover_token_XXXXXX";
    const int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
    ::close(fd);
    path = tmpl;
  }
  ~TokenFile() { ::unlink(path.c_str()); }
};

std::string withAdmin(const std::string& admin_block) {
  return kListeners + kBackends + kRoutes + "admin:\n" + admin_block;
}

}  // namespace

TEST_CASE("admin token: a configured source that yields no token is an error (fail closed)") {
  SUBCASE("a missing token file") {
    CHECK(
        errorsOf(withAdmin("  token_file: /nonexistent/token\n")) ==
        std::vector<std::string>{"cutover.yaml:12:15: admin.token_file: cannot read the token file "
                                 "'/nonexistent/token': No such file or directory"});
  }
  SUBCASE("a blank token file") {
    TokenFile blank(" \n\t\n");
    CHECK(errorsOf(withAdmin("  token_file: " + blank.path + "\n")) ==
          std::vector<std::string>{"cutover.yaml:12:15: admin.token_file: the token file '" +
                                   blank.path + "' is empty or blank"});
  }
  SUBCASE("an unset environment variable") {
    ::unsetenv("CUTOVER_TEST_UNSET_TOKEN");
    CHECK(errorsOf(withAdmin("  token_env: CUTOVER_TEST_UNSET_TOKEN\n")) ==
          std::vector<std::string>{"cutover.yaml:12:14: admin.token_env: environment variable "
                                   "CUTOVER_TEST_UNSET_TOKEN is not set"});
  }
  SUBCASE("a blank environment variable") {
    ::setenv("CUTOVER_TEST_BLANK_TOKEN", "  ", 1);
    CHECK(errorsOf(withAdmin("  token_env: CUTOVER_TEST_BLANK_TOKEN\n")) ==
          std::vector<std::string>{"cutover.yaml:12:14: admin.token_env: environment variable "
                                   "CUTOVER_TEST_BLANK_TOKEN is empty or blank"});
    ::unsetenv("CUTOVER_TEST_BLANK_TOKEN");
  }
  SUBCASE("a disabled admin API reads no token") {
    auto config = loadOk(withAdmin("  enabled: false\n  token_file: /nonexistent/token\n"));
    CHECK(config->admin.token.empty());
  }
}

TEST_CASE("admin token: read trimmed from the file, else from the environment") {
  TokenFile file("  s3cret-from-file \n");
  ::setenv("CUTOVER_TEST_TOKEN", "s3cret-from-env\n", 1);
  CHECK(loadOk(withAdmin("  token_file: " + file.path + "\n"))->admin.token == "s3cret-from-file");
  CHECK(loadOk(withAdmin("  token_env: CUTOVER_TEST_TOKEN\n"))->admin.token == "s3cret-from-env");
  CHECK(loadOk(withAdmin("  token_file: " + file.path + "\n  token_env: CUTOVER_TEST_TOKEN\n"))
            ->admin.token == "s3cret-from-file");
  // The secret itself never appears in the effective config.
  const std::string dumped = dumpYaml(*loadOk(withAdmin("  token_file: " + file.path + "\n")));
  CHECK(dumped.find("s3cret") == std::string::npos);
  ::unsetenv("CUTOVER_TEST_TOKEN");
}

TEST_CASE("a non-loopback admin address needs a token or allow_unauthenticated") {
  CHECK(errorsOf(withAdmin("  address: 0.0.0.0:9901\n")) ==
        std::vector<std::string>{
            "cutover.yaml:12:12: admin.address: admin address 0.0.0.0:9901 is not loopback and "
            "no token is configured: anyone who reaches it could reload, drain or roll back; set "
            "admin.token_file or admin.token_env, or admin.allow_unauthenticated: true"});
  auto open = loadOk(withAdmin("  address: 0.0.0.0:9901\n  allow_unauthenticated: true\n"));
  CHECK(open->admin.allow_unauthenticated);
  TokenFile file("t0ken\n");
  CHECK(loadOk(withAdmin("  address: 0.0.0.0:9901\n  token_file: " + file.path + "\n"))
            ->admin.token == "t0ken");
  CHECK(loadOk(withAdmin("  address: \"[::1]:9901\"\n"))->admin.token.empty());
  CHECK(loadOk(withAdmin("  address: 127.0.0.2:9901\n"))->admin.token.empty());
}

TEST_CASE("the hash follows the file bytes") {
  std::string text = kListeners + kBackends + kRoutes;
  auto a = loadOk(text);
  auto b = loadOk(text);
  auto c = loadOk(text + "# a comment changes the bytes\n");
  CHECK(a->hash == b->hash);
  CHECK(a->hash != c->hash);
  CHECK(a->hash.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("the shipped examples load without errors") {
  SUBCASE("migration.yaml mirrors the real migration") {
    LoadResult result = loadFile(sourcePath("config/examples/migration.yaml"));
    for (const Error& error : result.errors) INFO(error.str());
    REQUIRE(result.ok());
    const Config& config = *result.config;
    CHECK(config.file == sourcePath("config/examples/migration.yaml"));
    auto route = [&](const std::string& name) -> const Route& {
      for (const Route& r : config.routes) {
        if (r.name == name) return r;
      }
      FAIL("no route " << name);
      return config.routes[0];
    };
    auto perMinute = [&](const std::string& name) {
      const Route& r = route(name);
      REQUIRE(r.rate_limit.has_value());
      CHECK(r.rate_limit->per == minutes(1));
      CHECK(r.rate_limit->key == RateLimit::Key::ClientIp);
      return r.rate_limit->rate;
    };
    CHECK(perMinute("test-rate-limit") == 5);
    CHECK(perMinute("kibana") == 10);
    CHECK(perMinute("config") == 20);
    CHECK(perMinute("refresh") == 30);
    CHECK(perMinute("default") == 200);
    CHECK(route("kibana").match.path == "/api/fetch-kibana-data");
    CHECK(route("kibana").sticky.kind == Sticky::Kind::Cookie);
    CHECK(route("kibana").sticky.name == "session_id");
    CHECK(route("health").match.kind == RouteMatch::Kind::Exact);
    CHECK(config.routes.back().match.path == "/");
    CHECK(route("default").fallback == std::optional<uint32_t>(config.backendIndex("legacy")));
    CHECK(route("default").retry.enabled);
    const Backend& fresh = config.backends[config.backendIndex("new")];
    CHECK(fresh.circuit_breaker.enabled);
    CHECK(fresh.health_check.enabled);
  }
  SUBCASE("demo.yaml splits 50/50 with the override header on") {
    LoadResult result = loadFile(sourcePath("config/examples/demo.yaml"));
    for (const Error& error : result.errors) INFO(error.str());
    REQUIRE(result.ok());
    const Config& config = *result.config;
    CHECK(config.listeners[0].address.text == "0.0.0.0:8080");
    CHECK(config.backends[config.backendIndex("legacy")].endpoints[0].text == "127.0.0.1:9001");
    CHECK(config.backends[config.backendIndex("new")].endpoints[0].text == "127.0.0.1:9002");
    CHECK(config.routes[0].thresholds == std::vector<uint32_t>{5000, 10000});
    CHECK(config.override_header == "x-cutover-backend");
    CHECK(config.admin.address.text == "127.0.0.1:9901");
  }
}

TEST_CASE("http: path normalisation is on by default and each option can be set") {
  auto minimal = loadOk(kListeners + kBackends + kRoutes);
  CHECK(minimal->http.normalize_path);
  CHECK(minimal->http.merge_slashes);
  CHECK(minimal->http.escaped_slashes == Http::EscapedSlashes::Reject);
  CHECK(minimal->routes[0].match.case_sensitive);
  std::string dumped = dumpYaml(*minimal);
  CHECK(dumped.find(
            "http:\n  normalize_path: true\n  merge_slashes: true\n  escaped_slashes: reject") !=
        std::string::npos);
  CHECK(dumped.find("match: {prefix: /, case_sensitive: true}") != std::string::npos);

  for (const char* action : {"reject", "keep", "decode"}) {
    auto config = loadOk(
        kListeners + kBackends +
        "http: { normalize_path: false, merge_slashes: false, escaped_slashes: " + action + " }\n" +
        "routes:\n"
        "  - name: default\n"
        "    match: { prefix: /API, case_sensitive: false }\n"
        "    split: { new: 10, legacy: 90 }\n");
    CHECK_FALSE(config->http.normalize_path);
    CHECK_FALSE(config->http.merge_slashes);
    CHECK_FALSE(config->routes[0].match.case_sensitive);
    std::string dump = dumpYaml(*config);
    INFO(dump);
    CHECK(dump.find(std::string("escaped_slashes: ") + action) != std::string::npos);
    auto reloaded = loadOk(dump);
    CHECK(reloaded->http.escaped_slashes == config->http.escaped_slashes);
    CHECK_FALSE(reloaded->routes[0].match.case_sensitive);
    CHECK(dumpYaml(*reloaded) == dump);  // a fixed point
  }
}

TEST_CASE("http and case_sensitive errors carry file:line:col and key path") {
  CHECK(errorsOf(kListeners + kBackends +
                 "http: { escaped_slashes: drop, merge_slash: true, normalize_path: 1 }\n" +
                 "routes:\n"
                 "  - name: default\n"
                 "    match: { prefix: /, case_sensitive: maybe }\n"
                 "    split: { new: 10, legacy: 90 }\n") ==
        std::vector<std::string>{
            "cutover.yaml:7:26: http.escaped_slashes: expected reject, keep or decode, got 'drop'",
            "cutover.yaml:7:32: http: unknown key 'merge_slash' (did you mean 'merge_slashes'?)",
            "cutover.yaml:7:67: http.normalize_path: expected true or false, got '1'",
            "cutover.yaml:10:41: routes[0].match.case_sensitive: expected true or false, got "
            "'maybe'"});
}

TEST_CASE("duplicate route names are found among many routes") {
  std::string yaml = kListeners + kBackends + "routes:\n";
  for (int i = 0; i < 3000; ++i) {
    yaml += "  - {name: r" + std::to_string(i % 2999) + ", match: {prefix: /" + std::to_string(i) +
            "}, split: {legacy: 100}}\n";
  }
  CHECK(errorsOf(yaml) ==
        std::vector<std::string>{
            "cutover.yaml:3007:12: routes[2999].name: duplicate route name 'r0'"});
}

TEST_CASE("a route path that no normalised request can have is an error") {
  auto routeWith = [](const std::string& match, const std::string& http = "") {
    std::string yaml = kListeners + kBackends + http + "routes:\n  - name: r\n    match: { ";
    return yaml + match + " }\n    split: { new: 10, legacy: 90 }\n";
  };
  CHECK(errorsOf(routeWith("exact: /api//x")) ==
        std::vector<std::string>{
            "cutover.yaml:9:21: routes[0].match.exact: requests are normalised before routing (see "
            "the http section), so no request matches '/api//x'; normalised it reads '/api/x'"});
  CHECK(errorsOf(routeWith("prefix: /api/dat%61")) ==
        std::vector<std::string>{
            "cutover.yaml:9:22: routes[0].match.prefix: requests are normalised before routing "
            "(see the http section), so no request matches '/api/dat%61'; normalised it reads "
            "'/api/data'"});
  CHECK(errorsOf(routeWith("prefix: /a%2Fb")) ==
        std::vector<std::string>{
            "cutover.yaml:9:22: routes[0].match.prefix: requests with this path are answered 400 "
            "(a malformed escape, %00, or an encoded slash under http.escaped_slashes: reject), so "
            "the route never matches"});
  // Prefixes that end inside a segment or an escape requests carry in full are fine.
  for (const char* ok : {"prefix: /a/.", "prefix: /a/..", "prefix: /a/", "prefix: /a%3B",
                         "exact: /a/.b", "prefix: /API, case_sensitive: false"}) {
    CAPTURE(ok);
    CHECK(errorsOf(routeWith(ok)).empty());
  }
  CHECK(errorsOf(routeWith("prefix: /a%2F", "http: { escaped_slashes: keep }\n")).empty());
  CHECK(errorsOf(routeWith("prefix: /a%2", "http: { escaped_slashes: keep }\n")).empty());
  CHECK(errorsOf(routeWith("exact: /a//b/./c",
                           "http: { normalize_path: false, merge_slashes: false }\n"))
            .empty());
}

TEST_CASE("trusted proxies: hops or CIDRs, dumped and reloaded; errors name file, line and key") {
  const std::string routes =
      "routes:\n"
      "  - name: default\n"
      "    match: { prefix: / }\n"
      "    split: { new: 10, legacy: 90 }\n";
  auto config = loadOk(kListeners + kBackends +
                       "http: { trusted_proxies: [10.0.0.0/8, 'fd00::/8', 192.0.2.7] }\n" + routes);
  REQUIRE(config->http.trusted.cidrs.size() == 3);
  CHECK(config->http.trusted.hops == 0);
  std::string dump = dumpYaml(*config);
  INFO(dump);
  CHECK(dump.find("trusted_proxies: [10.0.0.0/8, fd00::/8, 192.0.2.7/32]") != std::string::npos);
  auto reloaded = loadOk(dump);
  CHECK(dumpYaml(*reloaded) == dump);

  auto hops = loadOk(kListeners + kBackends + "http: { xff_num_trusted_hops: 2 }\n" + routes);
  CHECK(hops->http.trusted.hops == 2);
  CHECK(dumpYaml(*loadOk(dumpYaml(*hops))) == dumpYaml(*hops));

  CHECK(errorsOf(kListeners + kBackends +
                 "http: { trusted_proxies: [10.1.0.0/8, lb.internal], xff_num_trusted_hops: 1 }\n" +
                 routes) ==
        std::vector<std::string>{
            "cutover.yaml:7:26: http.trusted_proxies: set either xff_num_trusted_hops or "
            "trusted_proxies, not both (a trusted peer's X-Forwarded-For is read one way)",
            "cutover.yaml:7:27: http.trusted_proxies[0]: expected an IP address or CIDR with no "
            "host bits set (10.0.0.0/8, fd00::/8, 192.0.2.7), got '10.1.0.0/8'",
            "cutover.yaml:7:39: http.trusted_proxies[1]: expected an IP address or CIDR with no "
            "host bits set (10.0.0.0/8, fd00::/8, 192.0.2.7), got 'lb.internal'"});
  CHECK(errorsOf(kListeners + kBackends + "http: { xff_num_trusted_hops: 17 }\n" + routes).size() ==
        1);
}

TEST_CASE("sticky insert: cookie only, dumped and reloaded") {
  auto route = [](const std::string& sticky) {
    return kListeners + kBackends +
           "routes:\n"
           "  - name: default\n"
           "    match: { prefix: / }\n"
           "    split: { new: 10, legacy: 90 }\n"
           "    sticky: " +
           sticky + "\n";
  };
  auto config = loadOk(route("{ cookie: cb, insert: true, max_age: 24h, secure: true }"));
  const Sticky& s = config->routes[0].sticky;
  CHECK(s.insert);
  CHECK(s.secure);
  CHECK(s.max_age == std::chrono::hours(24));
  std::string dump = dumpYaml(*config);
  INFO(dump);
  CHECK(dump.find("sticky: {cookie: cb, insert: true, max_age: 24h, secure: true}") !=
        std::string::npos);
  CHECK(dumpYaml(*loadOk(dump)) == dump);
  CHECK(loadOk(route("{ cookie: cb }"))->routes[0].sticky.max_age == std::chrono::hours(720));
  CHECK(errorsOf(route("{ header: x-user, insert: true }")) ==
        std::vector<std::string>{
            "cutover.yaml:11:39: routes[0].sticky.insert: applies to a sticky cookie only"});
  CHECK(errorsOf(route("{ cookie: cb, insert: true, max_age: 0s }")).size() == 1);
}

TEST_CASE("DNS names: RFC 1123 host and a port 1..65535, syntax only") {
  const char* good[] = {"web:8080",
                        "web.shop.svc.cluster.local:80",
                        "web.shop.svc.cluster.local.:80",
                        "Web-1.Example.COM:65535",
                        "a:1",
                        "0web.example:443",
                        "svc.cutover.test:9000"};
  for (const char* text : good) {
    INFO(text);
    DnsName out;
    REQUIRE(parseDnsName(text, out));
    CHECK(out.text == text);
    CHECK(out.host == std::string(text).substr(0, std::string(text).rfind(':')));
  }
  DnsName port;
  REQUIRE(parseDnsName("web.example:8443", port));
  CHECK(port.port == 8443);
  const std::string long_label(64, 'a');
  const char* bad[] = {"",
                       "web",
                       "web:",
                       ":80",
                       "web:0",
                       "web:65536",
                       "web:http",
                       "-web:80",
                       "web-:80",
                       "we_b:80",
                       "web..example:80",
                       ".web:80",
                       "web.example..:80",
                       "10.0.0.300:80",
                       "web.123:80",
                       "web :80",
                       "[::1]:80"};
  for (const char* text : bad) {
    INFO(text);
    DnsName out;
    out.text = "untouched";
    CHECK_FALSE(parseDnsName(text, out));
    CHECK(out.text == "untouched");
  }
  DnsName out;
  CHECK_FALSE(parseDnsName(long_label + ".example:80", out));
  CHECK(parseDnsName(std::string(63, 'a') + ".example:80", out));
  std::string too_long;
  for (int i = 0; i < 64; ++i) too_long += "abc.";
  CHECK_FALSE(parseDnsName(too_long + "x:80", out));
}

TEST_CASE("backend endpoints may be DNS names, kept apart from numeric ones and never resolved") {
  auto config = loadOk(kListeners +
                       "backends:\n"
                       "  legacy: { endpoints: [\"127.0.0.1:9001\"] }\n"
                       "  new:\n"
                       "    endpoints: [\"127.0.0.1:9002\", \"web.shop.svc.cluster.local:8080\", "
                       "\"nonexistent.invalid:80\"]\n"
                       "    dns_refresh: 5s\n" +
                       kRoutes);
  const Backend& fresh = config->backends[static_cast<size_t>(config->backendIndex("new"))];
  REQUIRE(fresh.endpoints.size() == 1);
  CHECK(fresh.endpoints[0].text == "127.0.0.1:9002");
  REQUIRE(fresh.dns.size() == 2);
  CHECK(fresh.dns[0].host == "web.shop.svc.cluster.local");
  CHECK(fresh.dns[0].port == 8080);
  CHECK(fresh.dns[1].text == "nonexistent.invalid:80");  // loading does not resolve
  CHECK(fresh.dns_refresh == seconds(5));
  CHECK(fresh.endpoint_dns.empty());
  const Backend& legacy = config->backends[static_cast<size_t>(config->backendIndex("legacy"))];
  CHECK(legacy.dns.empty());
  CHECK(legacy.dns_refresh == seconds(30));

  // A backend may have only names.
  auto only = loadOk(kListeners +
                     "backends:\n"
                     "  legacy: { endpoints: [\"legacy.shop:9001\"] }\n"
                     "  new: { endpoints: [\"127.0.0.1:9002\"] }\n" +
                     kRoutes);
  CHECK(only->backends[0].endpoints.empty());
  CHECK(only->backends[0].dns.size() == 1);

  // The dump prints names as written, after the numeric endpoints, and loads back to itself.
  std::string dump = dumpYaml(*config);
  INFO(dump);
  CHECK(dump.find("endpoints: [127.0.0.1:9002, web.shop.svc.cluster.local:8080, "
                  "nonexistent.invalid:80]") != std::string::npos);
  CHECK(dump.find("dns_refresh: 5s") != std::string::npos);
  CHECK(dump.find("dns_refresh: 30s") != std::string::npos);
  CHECK(dumpYaml(*loadOk(dump)) == dump);
}

TEST_CASE("DNS endpoint errors name file, line and key") {
  auto backends = [](const std::string& endpoints, const std::string& extra = "") {
    return kListeners + "backends:\n  legacy: { endpoints: [\"127.0.0.1:9001\"] }\n" +
           "  new: { endpoints: " + endpoints + extra + " }\n" + kRoutes;
  };
  CHECK(errorsOf(backends("[\"web.example\"]")) ==
        std::vector<std::string>{"cutover.yaml:6:22: backends.new.endpoints[0]: a DNS name needs "
                                 "its port, like 'web.example:8080', got 'web.example'"});
  CHECK(
      errorsOf(backends("[\"web.example:0\"]")) ==
      std::vector<std::string>{
          "cutover.yaml:6:22: backends.new.endpoints[0]: a DNS name needs a port 1..65535, got 0"});
  CHECK(errorsOf(backends("[\"web.example:70000\"]")) ==
        std::vector<std::string>{
            "cutover.yaml:6:22: backends.new.endpoints[0]: port must be 0..65535, got 70000"});
  CHECK(errorsOf(backends("[\"we_b:80\"]")) ==
        std::vector<std::string>{
            "cutover.yaml:6:22: backends.new.endpoints[0]: expected a numeric address like "
            "127.0.0.1:8080 or [::1]:8080, or a DNS name with its port like "
            "web.shop.svc.cluster.local:8080, got 'we_b:80'"});
  CHECK(errorsOf(backends("[\"web.example:80\", \"WEB.example:80\"]")) ==
        std::vector<std::string>{
            "cutover.yaml:6:40: backends.new.endpoints[1]: duplicate endpoint WEB.example:80"});
  CHECK(errorsOf(backends("[\"web.example:80\"]", ", dns_refresh: 500ms")) ==
        std::vector<std::string>{
            "cutover.yaml:6:54: backends.new.dns_refresh: must be 1s..24h, got 500ms"});
  CHECK(errorsOf(backends("[\"web.example:80\"]", ", dns_refrsh: 5s")).size() == 1);
  // Listeners and the admin address still need numbers: they are bound before anything resolves.
  CHECK(errorsOf("listeners:\n  - name: public\n    address: db.internal:8080\n" + kBackends +
                 kRoutes)
            .size() == 1);
}

// ---- rollback roles ---------------------------------------------------------------------------

namespace {
const std::string kFastapiBackends =
    "backends:\n"
    "  fastapi-v1: { endpoints: [\"127.0.0.1:9001\"] }\n"
    "  fastapi-v2: { endpoints: [\"127.0.0.1:9002\"] }\n";
}  // namespace

TEST_CASE("stable: a route's own, else defaults.stable, else the backend named legacy") {
  auto own = loadOk(kListeners + kFastapiBackends +
                    "routes:\n"
                    "  - name: a\n"
                    "    match: { prefix: / }\n"
                    "    split: { fastapi-v1: 90, fastapi-v2: 10 }\n"
                    "    stable: fastapi-v1\n");
  REQUIRE(own->routes[0].stable);
  CHECK(own->backends[*own->routes[0].stable].name == "fastapi-v1");

  auto defaulted = loadOk(kListeners + kFastapiBackends +
                          "defaults: { stable: fastapi-v2 }\n"
                          "routes:\n"
                          "  - name: a\n"
                          "    match: { prefix: /a }\n"
                          "    split: { fastapi-v1: 90, fastapi-v2: 10 }\n"
                          "  - name: b\n"
                          "    match: { prefix: / }\n"
                          "    split: { fastapi-v1: 50, fastapi-v2: 50 }\n"
                          "    stable: fastapi-v1\n");
  CHECK(defaulted->backends[*defaulted->routes[0].stable].name == "fastapi-v2");
  CHECK(defaulted->backends[*defaulted->routes[1].stable].name == "fastapi-v1");

  auto legacy = loadOk(kListeners + kBackends + kRoutes);
  REQUIRE(legacy->routes[0].stable);
  CHECK(legacy->backends[*legacy->routes[0].stable].name == "legacy");

  // One backend and no role anywhere: nothing to roll back, not an error.
  auto single = loadOk(kListeners + kFastapiBackends +
                       "routes:\n"
                       "  - name: a\n"
                       "    match: { prefix: / }\n"
                       "    split: { fastapi-v2: 100 }\n");
  CHECK_FALSE(single->routes[0].stable);
}

TEST_CASE("a route splitting over two backends without a rollback target is refused, with line") {
  CHECK(errorsOf(kListeners + kFastapiBackends +
                 "routes:\n"
                 "  - name: a\n"
                 "    match: { prefix: / }\n"
                 "    split: { fastapi-v1: 90, fastapi-v2: 10 }\n") ==
        std::vector<std::string>{
            "cutover.yaml:8:5: routes[0].stable: route splits over fastapi-v1, fastapi-v2 but has "
            "no rollback target: set 'stable: <backend>' on the route or 'defaults: {stable: "
            "<backend>}' (a backend named 'legacy' is the default)"});
  CHECK(errorsOf(kListeners + kFastapiBackends +
                 "routes:\n"
                 "  - name: a\n"
                 "    match: { prefix: / }\n"
                 "    split: { fastapi-v1: 90, fastapi-v2: 10 }\n"
                 "    stable: fastapi-v3\n") ==
        std::vector<std::string>{"cutover.yaml:11:13: routes[0].stable: unknown backend "
                                 "'fastapi-v3' (backends: fastapi-v1, fastapi-v2)"});
  CHECK(errorsOf(kListeners + kFastapiBackends + "defaults: { stabel: fastapi-v1 }\n" +
                 "routes:\n"
                 "  - name: a\n"
                 "    match: { prefix: / }\n"
                 "    split: { fastapi-v1: 100 }\n")
            .front()
            .starts_with("cutover.yaml:7:13: defaults: unknown key 'stabel' (did you mean"));
}

TEST_CASE("state_dir and stable roles survive the dump round trip") {
  auto config = loadOk(kListeners + kFastapiBackends +
                       "defaults: { stable: fastapi-v1 }\n"
                       "state_dir: /var/lib/cutover\n"
                       "routes:\n"
                       "  - name: a\n"
                       "    match: { prefix: / }\n"
                       "    split: { fastapi-v1: 90, fastapi-v2: 10 }\n");
  CHECK(config->state_dir == "/var/lib/cutover");
  std::string dumped = dumpYaml(*config);
  CHECK(dumped.find("stable: fastapi-v1") != std::string::npos);
  auto again = loadOk(dumped);
  CHECK(dumpYaml(*again) == dumped);
  CHECK(again->state_dir == "/var/lib/cutover");
  CHECK(*again->default_stable == *config->default_stable);
  CHECK(loadOk(kListeners + kBackends + kRoutes)->state_dir.empty());
}

TEST_CASE("listeners[].tls: defaults, every key read, positions of the paths kept") {
  auto cfg = loadOk(kListeners +
                    "    tls:\n"
                    "      certificates:\n"
                    "        - { cert: /c/a.pem, key: /c/a.key }\n"
                    "        - { cert: /c/b.pem, key: /c/b.key }\n"
                    "      min_version: \"1.3\"\n"
                    "      client_cert: require\n"
                    "      client_ca: /c/ca.pem\n"
                    "      client_subject_header: X-Peer\n"
                    "      handshake_timeout: 2s\n" +
                    kBackends + kRoutes);
  REQUIRE(cfg->listeners[0].tls);
  const ListenerTls& t = *cfg->listeners[0].tls;
  REQUIRE(t.certificates.size() == 2);
  CHECK(t.certificates[1].key == "/c/b.key");
  CHECK(t.certificates[0].cert_at.line == 6);
  CHECK(t.min_version == 13);
  CHECK(t.client_cert == ClientCertMode::Require);
  CHECK(t.client_subject_header == "x-peer");
  CHECK(t.handshake_timeout == seconds(2));
  auto plain = loadOk(kListeners + kBackends + kRoutes);
  CHECK_FALSE(plain->listeners[0].tls);
  auto dflt = loadOk(kListeners + "    tls: { certificates: [{ cert: a, key: b }] }\n" + kBackends +
                     kRoutes);
  CHECK(dflt->listeners[0].tls->min_version == 12);
  CHECK(dflt->listeners[0].tls->client_cert == ClientCertMode::None);
  CHECK(dflt->listeners[0].tls->client_subject_header == "x-client-cert-subject");
  CHECK(dflt->listeners[0].tls->handshake_timeout == seconds(10));
}

TEST_CASE("listeners[].tls: unknown keys, bad versions and modes, a missing client_ca fail") {
  auto errs = errorsOf(kListeners +
                       "    tls:\n"
                       "      certificates: [{ cert: a, key: b, chain: c }]\n"
                       "      min_version: \"1.1\"\n"
                       "      client_cert: maybe\n"
                       "      ciphers: ALL\n" +
                       kBackends + kRoutes);
  REQUIRE(errs.size() == 4);
  CHECK(errs[0].find("listeners[0].tls.certificates[0]") != std::string::npos);
  CHECK(errs[0].find("chain") != std::string::npos);
  CHECK(errs[1].find("listeners[0].tls.min_version: must be \"1.2\" or \"1.3\"") !=
        std::string::npos);
  CHECK(errs[2].find("client_cert: must be none, optional or require") != std::string::npos);
  CHECK(errs[3].find("ciphers") != std::string::npos);
  auto no_ca = errorsOf(kListeners + "    tls: { certificates: [{ cert: a, key: b }], " +
                        "client_cert: optional }\n" + kBackends + kRoutes);
  REQUIRE(no_ca.size() == 1);
  CHECK(no_ca[0].find("listeners[0].tls.client_ca: required") != std::string::npos);
  auto no_certs = errorsOf(kListeners + "    tls: { certificates: [] }\n" + kBackends + kRoutes);
  REQUIRE(no_certs.size() == 1);
  CHECK(no_certs[0].find("listeners[0].tls.certificates") != std::string::npos);
}
