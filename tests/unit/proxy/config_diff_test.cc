// Reload diffs and rollback rewriting.
#include "proxy/config_diff.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "config/loader.h"
#include "proxy/router.h"

using namespace cutover;

namespace {
std::shared_ptr<const config::Config> load(int new_weight, const char* extra_route = "") {
  std::string yaml =
      "listeners: [{name: p, address: 127.0.0.1:0}]\n"
      "backends:\n"
      "  legacy: {endpoints: [\"127.0.0.1:1\"]}\n"
      "  new: {endpoints: [\"127.0.0.1:2\"]}\n"
      "routes:\n"
      "  - {name: kibana, match: {prefix: /k}, split: {new: " +
      std::to_string(new_weight) + ", legacy: " + std::to_string(100 - new_weight) + "}}\n" +
      extra_route;
  config::LoadResult r = config::loadString(yaml, "t.yaml");
  REQUIRE(r.ok());
  return r.config;
}
bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

TEST_CASE("a weight change is described as 'route kibana: new 10% -> 25%'") {
  auto a = load(10);
  auto b = load(25, "  - {name: extra, match: {prefix: /}, split: {legacy: 100}}\n");
  auto changes = describeChanges(*a, *b);
  CHECK(has(changes, "route kibana: new 10% -> 25%"));
  CHECK(has(changes, "route kibana: legacy 90% -> 75%"));
  CHECK(has(changes, "route extra: added"));
  CHECK(describeChanges(*a, *a).empty());
  CHECK(has(describeChanges(*b, *a), "route extra: removed"));
}

TEST_CASE("rollback sends every bucket of every route to legacy, and the signature ignores it") {
  auto cfg = load(60);
  auto rolled = withRollback(*cfg);
  const config::Route& r = rolled->routes[0];
  for (uint32_t bucket : {0u, 1u, 5999u, 6000u, 9999u}) {
    CHECK(rolled->backends[r.split[pickSplit(r, bucket)].backend].name == "legacy");
  }
  CHECK(r.thresholds.back() == 10000);
  CHECK(weightSignature(*cfg) != weightSignature(*rolled));
  CHECK(weightSignature(*cfg) == weightSignature(*load(60)));
  CHECK(weightSignature(*cfg) != weightSignature(*load(70)));
}

TEST_CASE(
    "rollback acts on roles: every bucket goes to the route's stable backend, whatever names") {
  config::LoadResult res = config::loadString(
      "listeners: [{name: p, address: 127.0.0.1:0}]\n"
      "backends:\n"
      "  fastapi-v1: {endpoints: [\"127.0.0.1:1\"]}\n"
      "  fastapi-v2: {endpoints: [\"127.0.0.1:2\"]}\n"
      "  canary: {endpoints: [\"127.0.0.1:3\"]}\n"
      "defaults: {stable: fastapi-v1}\n"
      "routes:\n"
      "  - {name: a, match: {prefix: /a}, split: {fastapi-v2: 70, fastapi-v1: 30}}\n"
      "  - {name: b, match: {prefix: /b}, split: {fastapi-v2: 50, canary: 50}}\n"
      "  - {name: c, match: {prefix: /}, split: {fastapi-v2: 100}, stable: canary}\n",
      "t.yaml");
  REQUIRE(res.ok());
  auto rolled = withRollback(*res.config);
  const char* expected[] = {"fastapi-v1", "fastapi-v1", "canary"};
  for (size_t i = 0; i < 3; ++i) {
    const config::Route& r = rolled->routes[i];
    CAPTURE(r.name);
    for (uint32_t bucket : {0u, 1u, 4999u, 5000u, 6999u, 7000u, 9999u}) {
      CHECK(rolled->backends[r.split[pickSplit(r, bucket)].backend].name == expected[i]);
    }
    CHECK(r.thresholds.back() == 10000);
  }
}

TEST_CASE("a reload names limit, timeout, breaker, retry, rate-limit and health changes") {
  auto yaml = [](const std::string& tail, const std::string& backend_extra,
                 const std::string& route_extra) {
    std::string y = "listeners: [{name: p, address: 127.0.0.1:0}]\n" + tail +
                    "backends:\n"
                    "  legacy: {endpoints: [\"127.0.0.1:1\"]}\n"
                    "  new: {endpoints: [\"127.0.0.1:2\"]" +
                    backend_extra +
                    "}\n"
                    "routes:\n"
                    "  - {name: kibana, match: {prefix: /k}, split: {new: 10, legacy: 90}" +
                    route_extra + "}\n";
    config::LoadResult r = config::loadString(y, "t.yaml");
    REQUIRE(r.ok());
    return r.config;
  };
  auto base = yaml("", "", "");
  auto changed = yaml("limits: {max_header_bytes: 32768}\ntimeouts: {connect: 2s}\n",
                      ", circuit_breaker: {consecutive_failures: 3}, health_check: {path: /h}",
                      ", retry: {attempts: 2}, rate_limit: {rate: 5/s, key: client_ip}");
  auto changes = describeChanges(*base, *changed);
  CHECK(has(changes, "limits changed"));
  CHECK(has(changes, "timeouts changed"));
  CHECK(has(changes, "backend new: circuit_breaker changed"));
  CHECK(has(changes, "backend new: health_check changed"));
  CHECK(has(changes, "route kibana: retry changed"));
  CHECK(has(changes, "route kibana: rate_limit changed"));
  CHECK_FALSE(has(changes, "backend legacy: circuit_breaker changed"));
  CHECK(describeChanges(*changed, *changed).empty());
}
