#include "filters/rate_limit.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "common/clock.h"
#include "filters/registry.h"
#include "tests/unit/filters/fake_callbacks.h"

using namespace cutover;
using namespace std::chrono_literals;
using cutover::testing::FakeCallbacks;

namespace {

config::RateLimit limit(uint32_t rate, config::Duration per) {
  config::RateLimit l;
  l.rate = rate;
  l.per = per;
  return l;
}

config::Route route(std::string name, std::optional<config::RateLimit> rl = std::nullopt) {
  config::Route r;
  r.name = std::move(name);
  r.rate_limit = std::move(rl);
  return r;
}

// The config of the real migration: per-route limits, 200/min for everything else.
config::Config migrationConfig() {
  config::Config c;
  c.routes.push_back(route("test-rate-limit", limit(5, 60s)));
  c.routes.push_back(route("fetch-kibana-data", limit(10, 60s)));
  c.routes.push_back(route("health"));
  c.rate_limit = limit(200, 60s);
  return c;
}

struct Result {
  FilterStatus status;
  std::unique_ptr<FakeCallbacks> cb;
};

Result run(const FilterFactory& factory, const config::Config& cfg, int route_index,
           std::string client = "127.0.0.1", std::string header_name = {},
           std::string header_value = {}) {
  auto cb = std::make_unique<FakeCallbacks>(cfg.routes[static_cast<size_t>(route_index)],
                                            route_index, std::move(client));
  if (!header_name.empty()) cb->request().headers.add(header_name, header_value);
  testing::BuiltFilter filter(factory);
  const FilterStatus status = filter->onRequest(*cb);
  return {status, std::move(cb)};
}

}  // namespace

TEST_CASE("6th request in a minute on a 5/min route gets 429 with exact headers") {
  ManualClock clock;
  StateStore store(1);
  const config::Config cfg = migrationConfig();
  RateLimitFactory factory(cfg, store, clock);
  CHECK(factory.name() == "rate_limit");

  for (int i = 0; i < 5; ++i) {
    auto r = run(factory, cfg, 0);
    REQUIRE(r.status == FilterStatus::Continue);
    CHECK(r.cb->replies == 0);
    CHECK(r.cb->responseHeader("RateLimit-Limit") == "5");
    CHECK(r.cb->responseHeader("RateLimit-Remaining") == std::to_string(4 - i));
    CHECK(r.cb->responseHeader("RateLimit-Reset") == std::to_string(12 * (i + 1)));
  }
  auto r = run(factory, cfg, 0);
  CHECK(r.status == FilterStatus::Responded);
  CHECK(r.cb->replies == 1);
  CHECK(r.cb->reply_status == 429);
  CHECK(r.cb->reply_reason == Reason::RateLimited);
  CHECK(
      r.cb->reply_headers ==
      "Retry-After: 12\r\nRateLimit-Limit: 5\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 12\r\n");
  CHECK(r.cb->response_headers.empty());

  clock.advance(12s);
  CHECK(run(factory, cfg, 0).status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0).status == FilterStatus::Responded);
}

TEST_CASE("routes without their own limit use the chain default, each with its own buckets") {
  ManualClock clock;
  StateStore store(1);
  const config::Config cfg = migrationConfig();
  RateLimitFactory factory(cfg, store, clock);
  REQUIRE(factory.limitFor(2) != nullptr);
  CHECK(factory.limitFor(2)->limit.rate == 200);
  for (int i = 0; i < 200; ++i) REQUIRE(run(factory, cfg, 2).status == FilterStatus::Continue);
  auto r = run(factory, cfg, 2);
  CHECK(r.status == FilterStatus::Responded);
  CHECK(r.cb->reply_headers.find("Retry-After: 1\r\n") == 0);  // 300 ms, rounded up
  CHECK(r.cb->reply_headers.find("RateLimit-Limit: 200\r\n") != std::string::npos);
  // The per-route override has its own limit and its own buckets.
  for (int i = 0; i < 10; ++i) REQUIRE(run(factory, cfg, 1).status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 1).status == FilterStatus::Responded);
}

TEST_CASE("no chain default: routes without a limit pass untouched") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg = migrationConfig();
  cfg.rate_limit.reset();
  RateLimitFactory factory(cfg, store, clock);
  CHECK(factory.limitFor(2) == nullptr);
  CHECK(factory.limitFor(-1) == nullptr);
  CHECK(factory.limitFor(99) == nullptr);
  for (int i = 0; i < 1000; ++i) {
    auto r = run(factory, cfg, 2);
    REQUIRE(r.status == FilterStatus::Continue);
    REQUIRE(r.cb->response_headers.empty());
  }
}

TEST_CASE("each client address has its own bucket") {
  ManualClock clock;
  StateStore store(1);
  const config::Config cfg = migrationConfig();
  RateLimitFactory factory(cfg, store, clock);
  for (int i = 0; i < 5; ++i)
    REQUIRE(run(factory, cfg, 0, "10.0.0.1").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.1").status == FilterStatus::Responded);
  CHECK(run(factory, cfg, 0, "10.0.0.2").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "::1").status == FilterStatus::Continue);
}

TEST_CASE("dry run only counts: the request continues and is marked") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg = migrationConfig();
  cfg.routes[0].rate_limit->mode = config::RateLimit::Mode::DryRun;
  RateLimitFactory factory(cfg, store, clock);
  int would_reject = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = run(factory, cfg, 0);
    REQUIRE(r.status == FilterStatus::Continue);
    REQUIRE(r.cb->replies == 0);
    would_reject += r.cb->info().rate_limited_dry_run ? 1 : 0;
  }
  CHECK(would_reject == 15);
}

TEST_CASE("response_headers: false leaves allowed responses alone") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg = migrationConfig();
  cfg.routes[0].rate_limit->response_headers = false;
  RateLimitFactory factory(cfg, store, clock);
  auto r = run(factory, cfg, 0);
  CHECK(r.status == FilterStatus::Continue);
  CHECK(r.cb->response_headers.empty());
}

TEST_CASE("header key: one bucket per header value; requests without it are not counted") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg;
  auto l = limit(2, 1s);
  l.key = config::RateLimit::Key::Header;
  l.header = "x-api-key";
  cfg.routes.push_back(route("api", l));
  RateLimitFactory factory(cfg, store, clock);
  // Different client addresses, same key: one bucket.
  CHECK(run(factory, cfg, 0, "10.0.0.1", "X-Api-Key", "alice").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.2", "X-Api-Key", "alice").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.3", "X-Api-Key", "alice").status == FilterStatus::Responded);
  CHECK(run(factory, cfg, 0, "10.0.0.1", "X-Api-Key", "bob").status == FilterStatus::Continue);
  for (int i = 0; i < 10; ++i) {
    auto r = run(factory, cfg, 0, "10.0.0.1");
    REQUIRE(r.status == FilterStatus::Continue);
    REQUIRE(r.cb->response_headers.empty());
  }
}

TEST_CASE("route key: all clients share one bucket") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg;
  auto l = limit(3, 1s);
  l.key = config::RateLimit::Key::Route;
  cfg.routes.push_back(route("all", l));
  RateLimitFactory factory(cfg, store, clock);
  CHECK(run(factory, cfg, 0, "10.0.0.1").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.2").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.3").status == FilterStatus::Continue);
  CHECK(run(factory, cfg, 0, "10.0.0.4").status == FilterStatus::Responded);
}

TEST_CASE("buckets survive a reload that keeps the limit, and reset when it changes") {
  ManualClock clock;
  StateStore store(1);
  config::Config cfg = migrationConfig();
  {
    RateLimitFactory before(cfg, store, clock);
    for (int i = 0; i < 5; ++i) REQUIRE(run(before, cfg, 0).status == FilterStatus::Continue);
  }
  RateLimitFactory same(cfg, store, clock);
  CHECK(run(same, cfg, 0).status == FilterStatus::Responded);

  cfg.routes[0].rate_limit->mode = config::RateLimit::Mode::DryRun;  // mode: buckets kept
  RateLimitFactory dry(cfg, store, clock);
  auto r = run(dry, cfg, 0);
  CHECK(r.cb->info().rate_limited_dry_run);

  cfg.routes[0].rate_limit = limit(6, 60s);
  RateLimitFactory changed(cfg, store, clock);
  CHECK(run(changed, cfg, 0).status == FilterStatus::Continue);
}

TEST_CASE("registry builds request_id and rate_limit, and leaves router to the core") {
  ManualClock clock;
  StateStore store(1);
  const config::Config cfg = migrationConfig();
  auto rl = makeFilterFactory("rate_limit", cfg, store, clock);
  REQUIRE(rl != nullptr);
  CHECK(rl->name() == "rate_limit");
  auto rid = makeFilterFactory("request_id", cfg, store, clock);
  REQUIRE(rid != nullptr);
  CHECK(rid->name() == "request_id");
  CHECK(makeFilterFactory("router", cfg, store, clock) == nullptr);
  CHECK(makeFilterFactory("nope", cfg, store, clock) == nullptr);
  CHECK(isRegisteredFilter("rate_limit"));
  CHECK_FALSE(isRegisteredFilter("router"));
  for (int i = 0; i < 5; ++i) REQUIRE(run(*rl, cfg, 0).status == FilterStatus::Continue);
  CHECK(run(*rl, cfg, 0).status == FilterStatus::Responded);
}
