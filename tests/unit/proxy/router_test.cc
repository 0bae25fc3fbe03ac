// The weighted split: sticky buckets, thresholds, monotonic moves; route matching, scan and table.
#include "proxy/router.h"

#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "config/loader.h"
#include "config/route_table.h"

using namespace cutover;

namespace {

std::shared_ptr<const config::Config> load(const std::string& yaml) {
  config::LoadResult r = config::loadString(yaml, "test.yaml");
  for (const auto& e : r.errors) MESSAGE(e.str());
  REQUIRE(r.ok());
  return r.config;
}

std::string splitConfig(int new_weight) {
  return "listeners: [{name: p, address: 127.0.0.1:0}]\n"
         "backends:\n"
         "  legacy: {endpoints: [\"127.0.0.1:1\"]}\n"
         "  new: {endpoints: [\"127.0.0.1:2\"]}\n"
         "routes:\n"
         "  - name: r\n"
         "    match: {prefix: /}\n"
         "    split: {legacy: " +
         std::to_string(100 - new_weight) + ", new: " + std::to_string(new_weight) +
         "}\n"
         "    sticky: {cookie: sid}\n";
}

// Which backend name a key lands on.
std::string pick(const config::Config& cfg, const std::string& key) {
  const config::Route& r = cfg.routes[0];
  return cfg.backends[r.split[pickSplit(r, stickyBucket(key))].backend].name;
}

}  // namespace

TEST_CASE("100k sticky keys land within 0.5 percentage points of every weight") {
  for (int w : {0, 1, 10, 25, 50, 75, 90, 100}) {
    auto cfg = load(splitConfig(w));
    int to_new = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
      if (pick(*cfg, "user-" + std::to_string(i)) == "new") ++to_new;
    }
    double pct = 100.0 * to_new / n;
    CAPTURE(w);
    CHECK(pct >= w - 0.5);
    CHECK(pct <= w + 0.5);
  }
}

TEST_CASE("raising new's weight never moves a key from new back to legacy") {
  std::vector<int> steps = {0, 5, 10, 25, 50, 75, 90, 100};
  std::vector<std::shared_ptr<const config::Config>> cfgs;
  for (int w : steps) cfgs.push_back(load(splitConfig(w)));
  int moved_to_new = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string key = "k" + std::to_string(i);
    bool was_new = false;
    for (const auto& c : cfgs) {
      bool is_new = pick(*c, key) == "new";
      CHECK_FALSE((was_new && !is_new));
      if (!was_new && is_new) ++moved_to_new;
      was_new = is_new;
    }
  }
  CHECK(moved_to_new == 20000);  // at 100% every key ends on new
}

TEST_CASE("new owns the low buckets whatever order the split is written in") {
  auto cfg = load(splitConfig(10));
  const config::Route& r = cfg->routes[0];
  REQUIRE(r.split.size() == 2);
  CHECK(cfg->backends[r.split[0].backend].name == "new");
  CHECK(r.thresholds == std::vector<uint32_t>{1000, 10000});
  CHECK(pickSplit(r, 0) == 0);
  CHECK(pickSplit(r, 999) == 0);
  CHECK(pickSplit(r, 1000) == 1);
  CHECK(pickSplit(r, 9999) == 1);
}

TEST_CASE("sticky keys come from the cookie, a header or the client address") {
  RequestHead h;
  h.headers.add("Cookie", "a=1; sid=\"abc\"; z=2");
  h.headers.add("X-User", "u42");
  config::Route r;
  r.sticky.kind = config::Sticky::Kind::Cookie;
  r.sticky.name = "sid";
  CHECK(stickyKey(r, h, "10.0.0.1") == "abc");
  r.sticky.name = "missing";
  CHECK(stickyKey(r, h, "10.0.0.1").empty());
  r.sticky.kind = config::Sticky::Kind::Header;
  r.sticky.name = "x-user";
  CHECK(stickyKey(r, h, "10.0.0.1") == "u42");
  r.sticky.kind = config::Sticky::Kind::ClientIp;
  CHECK(stickyKey(r, h, "10.0.0.1") == "10.0.0.1");
  CHECK(findCookie("sid=x", "sid") == "x");
  CHECK(findCookie("xsid=1; sid=2", "sid") == "2");
}

TEST_CASE("routes match in order by prefix, exact path and header") {
  auto cfg = load(
      "listeners: [{name: p, address: 127.0.0.1:0}]\n"
      "backends: {legacy: {endpoints: [\"127.0.0.1:1\"]}}\n"
      "routes:\n"
      "  - {name: health, match: {exact: /health}, split: {legacy: 100}}\n"
      "  - {name: beta, match: {prefix: /api, header: {name: x-beta, value: \"1\"}}, split: "
      "{legacy: 100}}\n"
      "  - {name: api, match: {prefix: /api}, split: {legacy: 100}}\n"
      "  - {name: all, match: {prefix: /}, split: {legacy: 100}}\n");
  auto route = [&](const char* target, const char* beta) {
    RequestHead h;
    h.target = target;
    if (beta) h.headers.add("X-Beta", beta);
    int i = matchRoute(*cfg, h);
    return i < 0 ? std::string("none") : cfg->routes[static_cast<size_t>(i)].name;
  };
  CHECK(route("/health", nullptr) == "health");
  CHECK(route("/health/x", nullptr) == "all");
  CHECK(route("/api/x?q=/health", nullptr) == "api");
  CHECK(route("/api/x", "1") == "beta");
  CHECK(route("/api/x", "2") == "api");
  CHECK(route("/", nullptr) == "all");
}

namespace {

config::Route makeRoute(const std::string& name, config::RouteMatch::Kind kind,
                        const std::string& path, bool case_sensitive = true,
                        const std::string& header = "", const std::string& value = "") {
  config::Route r;
  r.name = name;
  r.match.kind = kind;
  r.match.path = path;
  r.match.case_sensitive = case_sensitive;
  r.match.header = header;
  r.match.header_value = value;
  return r;
}

constexpr auto kPrefix = config::RouteMatch::Kind::Prefix;
constexpr auto kExact = config::RouteMatch::Kind::Exact;

// The config with its routes indexed whatever their number (the loader skips the table for few).
config::Config indexed(std::vector<config::Route> routes) {
  config::Config cfg;
  cfg.routes = std::move(routes);
  cfg.route_table = std::make_shared<const config::RouteTable>(cfg.routes);
  return cfg;
}

std::string routeName(const config::Config& cfg, int i) {
  return i < 0 ? std::string("none") : cfg.routes[static_cast<size_t>(i)].name;
}

}  // namespace

TEST_CASE("the first route in config order wins across exact, prefix, header and case rules") {
  config::Config cfg = indexed({
      makeRoute("beta-exact", kExact, "/api/items", true, "x-beta", "1"),
      makeRoute("items-ci", kPrefix, "/API/ITEMS", false),
      makeRoute("items-exact", kExact, "/api/items"),
      makeRoute("api-beta", kPrefix, "/api", true, "x-beta"),
      makeRoute("api", kPrefix, "/api"),
      makeRoute("api-later", kPrefix, "/api"),  // never first: "api" has the same key, no header
      makeRoute("health-ci", kExact, "/Health", false),
      makeRoute("all", kPrefix, "/"),
  });
  auto route = [&](const char* target, const char* beta) {
    RequestHead h;
    h.target = target;
    if (beta) h.headers.add("X-Beta", beta);
    int table = matchRoute(cfg, h);
    CHECK(table == matchRouteLinear(cfg, h));
    return routeName(cfg, table);
  };
  CHECK(route("/api/items", "1") == "beta-exact");
  CHECK(route("/api/items", nullptr) == "items-ci");
  CHECK(route("/Api/Items/x", "1") == "items-ci");
  CHECK(route("/api/item", "2") == "api-beta");
  CHECK(route("/api/item", nullptr) == "api");
  CHECK(route("/API/item", nullptr) == "all");  // "/api" routes are case-sensitive
  CHECK(route("/HEALTH", nullptr) == "health-ci");
  CHECK(route("/health?x", nullptr) == "health-ci");
  CHECK(route("/health/", nullptr) == "all");
  CHECK(route("/", nullptr) == "all");
  CHECK(route("x", nullptr) == "none");
  CHECK(route("", nullptr) == "none");
}

TEST_CASE("a loaded config indexes its routes beyond a handful and keeps case_sensitive") {
  std::string yaml =
      "listeners: [{name: p, address: 127.0.0.1:0}]\n"
      "backends: {legacy: {endpoints: [\"127.0.0.1:1\"]}}\n"
      "routes:\n";
  for (int i = 0; i < 20; ++i) {
    yaml += "  - {name: r" + std::to_string(i) + ", match: {prefix: /p" + std::to_string(i) +
            "/, case_sensitive: " + (i % 2 ? "false" : "true") + "}, split: {legacy: 100}}\n";
  }
  auto cfg = load(yaml);
  REQUIRE(cfg->route_table != nullptr);
  RequestHead h;
  h.target = "/P3/x";
  CHECK(routeName(*cfg, matchRoute(*cfg, h)) == "r3");
  h.target = "/P4/x";
  CHECK(matchRoute(*cfg, h) == -1);
  auto few = load(
      "listeners: [{name: p, address: 127.0.0.1:0}]\n"
      "backends: {legacy: {endpoints: [\"127.0.0.1:1\"]}}\n"
      "routes: [{name: r, match: {prefix: /}, split: {legacy: 100}}]\n");
  CHECK(few->route_table == nullptr);  // a scan is faster
}

TEST_CASE("the route table agrees with the linear scan on random routes and paths") {
  std::mt19937 rng(2026);
  const std::vector<std::string> segments = {"a", "ab", "A", "b", "api", "API", "v1", "x.y", ""};
  auto randomPath = [&](size_t max_segments) {
    std::string p;
    size_t n = rng() % (max_segments + 1);
    for (size_t i = 0; i < n; ++i) p += "/" + segments[rng() % segments.size()];
    if (p.empty() || rng() % 4 == 0) p += "/";
    if (rng() % 3 == 0) p.pop_back();  // prefixes that end inside a segment ("/ap")
    return p.empty() ? std::string("/") : p;
  };
  for (int round = 0; round < 20; ++round) {
    std::vector<config::Route> routes;
    size_t count = 1 + rng() % (round < 10 ? 30 : 400);
    for (size_t i = 0; i < count; ++i) {
      std::string header;
      std::string value;
      if (rng() % 4 == 0) {
        header = "x-h";
        if (rng() % 2) value = std::to_string(rng() % 3);
      }
      routes.push_back(makeRoute("r" + std::to_string(i), rng() % 3 ? kPrefix : kExact,
                                 randomPath(3), rng() % 4 != 0, header, value));
    }
    config::Config cfg = indexed(std::move(routes));
    for (int i = 0; i < 3000; ++i) {
      RequestHead h;
      h.target = randomPath(4);
      if (rng() % 3 == 0) h.target += "?q=/api";
      if (rng() % 2) h.headers.add("X-H", std::to_string(rng() % 3));
      CAPTURE(h.target);
      REQUIRE(matchRoute(cfg, h) == matchRouteLinear(cfg, h));
    }
  }
}

// Not a test: prints the cost of one lookup, scan against table, for a few routes and for many.
// Run with: router_test -tc='*lookup cost*' --no-skip
TEST_CASE("lookup cost of the scan and the table" * doctest::skip()) {
  auto measure = [](const char* what, const config::Config& cfg,
                    const std::vector<RequestHead>& reqs, bool table) {
    const int rounds = 200000 / static_cast<int>(reqs.size()) + 1;
    long sink = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r) {
      for (const RequestHead& h : reqs)
        sink += table ? matchRoute(cfg, h) : matchRouteLinear(cfg, h);
    }
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
        (static_cast<double>(rounds) * static_cast<double>(reqs.size()));
    std::string line = std::string(what) + (table ? " via matchRoute: " : " linear scan: ") +
                       std::to_string(ns) + " ns/lookup (" + std::to_string(sink % 7) + ")";
    MESSAGE(line);
  };
  std::vector<RequestHead> reqs(4);
  reqs[0].target = "/api/fetch-kibana-data?x=1";
  reqs[1].target = "/health";
  reqs[2].target = "/static/js/app.0123456789.js";
  reqs[3].target = "/api/other/thing";
  std::vector<config::Route> three = {makeRoute("kibana", kPrefix, "/api/fetch-kibana-data"),
                                      makeRoute("health", kExact, "/health"),
                                      makeRoute("all", kPrefix, "/")};
  config::Config small;
  small.routes = three;  // as loaded: no table
  measure("3 routes", small, reqs, false);
  measure("3 routes", small, reqs, true);  // no table: the same scan
  measure("3 routes", small, reqs, false);
  measure("3 routes, forced", indexed(three), reqs, true);
  std::vector<config::Route> many;
  for (int i = 0; i < 10000; ++i) {
    many.push_back(makeRoute("r" + std::to_string(i), i % 3 ? kPrefix : kExact,
                             "/svc" + std::to_string(i % 997) + "/api/v" + std::to_string(i % 5) +
                                 "/items" + std::to_string(i)));
  }
  many.push_back(makeRoute("all", kPrefix, "/"));
  config::Config big = indexed(many);
  reqs[3].target = "/svc5/api/v0/items5000/x";
  measure("10001 routes", big, reqs, false);
  measure("10001 routes", big, reqs, true);
}
