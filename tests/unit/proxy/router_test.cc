// The weighted split: sticky buckets, thresholds, monotonic moves, route matching.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config/loader.h"
#include "proxy/router.h"

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
         "    split: {legacy: " + std::to_string(100 - new_weight) +
         ", new: " + std::to_string(new_weight) + "}\n"
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
      "  - {name: beta, match: {prefix: /api, header: {name: x-beta, value: \"1\"}}, split: {legacy: 100}}\n"
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
