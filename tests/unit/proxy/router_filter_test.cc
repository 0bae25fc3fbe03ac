// Router with a fake attempt and fake stream callbacks (no sockets): backend choice, failover,
// retries on the other backend, budget exhaustion, and the BackendLease given back exactly once on
// every path (success, reset, timeout, client abort, retry).
#include "proxy/router_filter.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "policy/circuit_breaker.h"
#include "policy/retry_budget.h"
#include "proxy/config_diff.h"
#include "proxy/metrics.h"
#include "proxy/router.h"
#include "tests/unit/proxy/test_snapshot.h"

using namespace cutover;

namespace {

struct FakeAttempt : UpstreamAttempt {
  std::vector<uint32_t> started;  // backend of each start()
  Reason next = Reason::None;     // what the next start() returns
  bool in_flight = false;
  int abandoned = 0;
  bool body_started = false;
  Reason start(const Snapshot&, uint32_t b, const RequestHead&, const ForwardInfo&,
               BackendLease&) override {
    started.push_back(b);
    Reason r = next;
    next = Reason::None;
    in_flight = r == Reason::None;
    return r;
  }
  void sendBody(const char*, size_t) override { body_started = true; }
  void endBody() override {}
  void pauseResponse() override {}
  void resumeResponse() override {}
  void abandon() override {
    if (in_flight) ++abandoned;
    in_flight = false;
  }
  UpstreamConnection* startTunnel() override { return nullptr; }
  void tunnelWrite(const char*, size_t) override {}
  bool active() const override { return in_flight; }
  bool bodyStarted() const override { return body_started; }
  uint32_t endpoint() const override { return 0; }
  void reset() override { body_started = false; }
};

struct FakeStream : RouterCallbacks {
  std::vector<std::pair<int, Reason>> local_replies;
  std::vector<uint16_t> heads;
  int completes = 0;
  std::vector<Reason> cuts;
  bool response_started = false;
  std::string written;
  void routerLocalReply(int status, Reason reason, std::string_view) override {
    local_replies.push_back({status, reason});
  }
  void routerHead(ResponseHead& head) override {
    heads.push_back(head.status);
    response_started = true;
  }
  void routerBody(const char*, size_t) override {}
  void routerComplete() override { ++completes; }
  void routerReadDone() override {}
  void routerResponseCut(Reason r) override { cuts.push_back(r); }
  bool responseStarted() const override { return response_started; }
  bool requestComplete() const override { return true; }
  void pauseClient() override {}
  void resumeClient() override {}
  void writeToClient(std::string_view b) override { written.append(b); }
  void routerTunnelClosed() override {}
  void appendResponseHeader(std::string_view n, std::string_view v) override {
    appended.append(n).append(": ").append(v).append("\r\n");
  }
  std::string appended;
};

struct Fixture {
  uv_loop_t loop;
  FastRng rng{42};
  Snapshot snap;
  FakeAttempt attempt;
  FakeStream stream;
  std::unique_ptr<Router> router;
  RequestHead req;
  StreamInfo info;

  explicit Fixture(const std::string& route_extra, const std::string& breaker = "") {
    uv_loop_init(&loop);
    std::string yaml =
        "listeners: [{name: public, address: '127.0.0.1:0'}]\n"
        "override_header: x-backend\n"
        "backends:\n"
        "  legacy: {endpoints: ['127.0.0.1:1']}\n"
        "  new: {endpoints: ['127.0.0.1:2']" +
        breaker +
        "}\n"
        "routes:\n"
        "  - name: r\n"
        "    match: {prefix: /}\n"
        "    split: {new: 100, legacy: 0}\n" +
        route_extra;
    testing::loadSnapshot(snap, yaml);
    router = std::make_unique<Router>(&loop, rng, stream);
    router->setAttempt(attempt);
    router->bind(snap);
    req.method = "GET";
    req.target = "/";
    req.headers.add("Host", "h");
  }
  ~Fixture() {
    router->reset();
    router->close([](uv_handle_t*) {}, nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  uint32_t backend(const std::string& name) const { return testing::backendIndex(snap, name); }
  void start() {
    ForwardInfo fwd;
    fwd.client_address = "10.0.0.1";
    router->start(&snap.config->routes[0], req, info, "10.0.0.1", fwd, uv_now(&loop) + 5000);
  }
  void answer(uint16_t status) {
    ResponseHead h;
    h.status = status;
    router->onAttemptHead(h);
  }
  // Nothing is held on any backend.
  void checkReleased() {
    for (const BackendRuntime& rt : snap.backends) {
      CHECK(rt.limits->inflight() == 0);
      CHECK(rt.limits->pending() == 0);
      CHECK(rt.budget->activeRequests() == 0);
      CHECK(rt.budget->activeRetries() == 0);
    }
  }
};

}  // namespace

TEST_CASE("the split's choice gets the attempt; a success holds slots until reset, then none") {
  Fixture f("");
  f.start();
  REQUIRE(f.attempt.started.size() == 1);
  CHECK(f.attempt.started[0] == f.backend("new"));
  CHECK(f.info.attempts == 1);
  CHECK(f.snap.backends[f.backend("new")].limits->inflight() == 1);
  CHECK(f.snap.backends[f.backend("new")].budget->activeRequests() == 1);
  f.answer(200);
  f.router->onAttemptComplete();
  CHECK(f.stream.heads == std::vector<uint16_t>{200});
  CHECK(f.stream.completes == 1);
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("the override header picks a backend of the route's split") {
  Fixture f("");
  f.req.headers.add("x-backend", "legacy");
  f.start();
  REQUIRE(f.attempt.started.size() == 1);
  CHECK(f.attempt.started[0] == f.backend("legacy"));
}

TEST_CASE("an open breaker fails over to the fallback; without one the answer is 503") {
  const std::string breaker = ", circuit_breaker: {consecutive_failures: 1, failure_on: [5xx]}";
  SUBCASE("fallback") {
    Fixture f("    fallback: legacy\n", breaker);
    f.snap.backends[f.backend("new")].breaker->onFailure(monotonicNs());
    f.start();
    REQUIRE(f.attempt.started.size() == 1);
    CHECK(f.attempt.started[0] == f.backend("legacy"));
    CHECK(f.info.failover);
  }
  SUBCASE("no fallback") {
    Fixture f("", breaker);
    f.snap.backends[f.backend("new")].breaker->onFailure(monotonicNs());
    f.start();
    CHECK(f.attempt.started.empty());
    REQUIRE(f.stream.local_replies.size() == 1);
    CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{503, Reason::CircuitOpen});
    f.router->reset();
    f.checkReleased();
  }
}

TEST_CASE("a 503 from new is retried on legacy after the backoff, and the retry slot goes back") {
  Fixture f(
      "    retry: {attempts: 2, backoff_base: 5ms, backoff_max: 5ms, retry_on_other_backend: "
      "true}\n");
  f.start();
  f.answer(503);
  CHECK(f.stream.heads.empty());  // the 503 is not the answer
  CHECK(f.attempt.abandoned == 1);
  CHECK(f.snap.backends[f.backend("legacy")].budget->activeRetries() == 1);
  uv_run(&f.loop, UV_RUN_DEFAULT);  // the backoff
  REQUIRE(f.attempt.started.size() == 2);
  CHECK(f.attempt.started[1] == f.backend("legacy"));
  CHECK(f.info.attempts == 2);
  f.answer(200);
  f.router->onAttemptComplete();
  CHECK(f.stream.heads == std::vector<uint16_t>{200});
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("an exhausted retry budget turns the failure into the local reply") {
  Fixture f("    retry: {attempts: 3, budget_ratio: 0.0, budget_min: 0}\n");
  f.start();
  f.router->onAttemptFailed(UpstreamCallbacks::Failure::Reset);
  CHECK(f.attempt.started.size() == 1);
  CHECK(f.info.retry_refused);  // said in the access log (and counted when metrics are on)
  REQUIRE(f.stream.local_replies.size() == 1);
  CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{502, Reason::UpstreamReset});
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("failures map to their local replies, and every path releases the lease once") {
  using F = UpstreamCallbacks::Failure;
  struct Case {
    F failure;
    int status;
    Reason reason;
  };
  for (Case c :
       {Case{F::Connect, 502, Reason::UpstreamConnectFailure},
        Case{F::Timeout, 504, Reason::UpstreamTimeout}, Case{F::Reset, 502, Reason::UpstreamReset},
        Case{F::BadResponse, 502, Reason::BadUpstreamResponse}}) {
    Fixture f("");
    f.start();
    f.router->onAttemptFailed(c.failure);
    REQUIRE(f.stream.local_replies.size() == 1);
    CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{c.status, c.reason});
    f.router->reset();
    f.checkReleased();
  }
}

TEST_CASE("a failure after the response started cuts it instead of answering") {
  Fixture f("");
  f.start();
  f.answer(200);
  f.router->onAttemptFailed(UpstreamCallbacks::Failure::Reset);
  CHECK(f.stream.local_replies.empty());
  CHECK(f.stream.cuts == std::vector<Reason>{Reason::UpstreamReset});
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("client abort or deadline while an attempt or a backoff is pending releases everything") {
  SUBCASE("attempt in flight") {
    Fixture f("");
    f.start();
    f.router->abandon();  // the stream's deadline or the client going away
    CHECK(f.attempt.abandoned == 1);
    f.router->reset();
    f.checkReleased();
  }
  SUBCASE("backoff pending") {
    Fixture f("    retry: {attempts: 2, backoff_base: 1s, backoff_max: 1s}\n");
    f.start();
    f.router->onAttemptFailed(UpstreamCallbacks::Failure::Connect);
    CHECK(f.snap.backends[f.backend("new")].budget->activeRetries() == 1);
    f.router->reset();
    f.checkReleased();
    uv_run(&f.loop, UV_RUN_NOWAIT);
    CHECK(f.attempt.started.size() == 1);  // the cancelled backoff never starts an attempt
  }
}

TEST_CASE("an attempt refused at start by a connection limit answers 503 with its reason") {
  Fixture f("");
  f.attempt.next = Reason::MaxConnections;
  f.start();
  REQUIRE(f.stream.local_replies.size() == 1);
  CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{503, Reason::MaxConnections});
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("a 101 to a request that did not ask for a tunnel is a bad upstream response") {
  Fixture f("");
  f.start();
  f.answer(101);
  CHECK(f.stream.heads.empty());
  REQUIRE(f.stream.local_replies.size() == 1);
  CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{502, Reason::BadUpstreamResponse});
}

TEST_CASE("body bytes arriving while a dead pooled connection is replaced are held, then sent") {
  Fixture f("");
  f.start();
  std::string& held = f.router->onAttemptSending();  // the head went out on the pooled one
  CHECK(held.empty());
  f.router->onAttemptReconnecting();  // ...which was dead: a fresh connection is on its way
  f.router->onRequestBody("hello", 5);
  CHECK_FALSE(f.attempt.body_started);                // not handed to an attempt with no head sent
  std::string& again = f.router->onAttemptSending();  // the fresh connection sent the head
  CHECK(again == "hello");
  f.router->onRequestBody(" world", 6);
  CHECK(f.attempt.body_started);  // from now on straight to the attempt
}

namespace {
// The snapshot a rollback builds: the effective config with every route on its stable backend.
void rollBack(Fixture& f) {
  f.snap.config = withRollback(*f.snap.config);
  f.snap.rollback = true;
}
}  // namespace

TEST_CASE("in a rollback the override header cannot pick a rolled-back backend: ignored, flagged") {
  SUBCASE("names the rolled-back backend") {
    Fixture f("");  // stable: legacy (the default)
    rollBack(f);
    f.req.headers.add("x-backend", "new");
    f.start();
    REQUIRE(f.attempt.started.size() == 1);
    CHECK(f.attempt.started[0] == f.backend("legacy"));
    CHECK(f.info.override_refused);
  }
  SUBCASE("names the stable backend") {
    Fixture f("");
    rollBack(f);
    f.req.headers.add("x-backend", "legacy");
    f.start();
    REQUIRE(f.attempt.started.size() == 1);
    CHECK(f.attempt.started[0] == f.backend("legacy"));
    CHECK_FALSE(f.info.override_refused);
  }
}

TEST_CASE("in a rollback an open stable backend does not fail over to a rolled-back fallback") {
  const std::string breaker = ", circuit_breaker: {consecutive_failures: 1, failure_on: [5xx]}";
  Fixture f("    stable: new\n    fallback: legacy\n", breaker);
  rollBack(f);
  f.snap.backends[f.backend("new")].breaker->onFailure(monotonicNs());
  f.start();
  CHECK(f.attempt.started.empty());
  REQUIRE(f.stream.local_replies.size() == 1);
  CHECK(f.stream.local_replies[0] == std::pair<int, Reason>{503, Reason::CircuitOpen});
  CHECK_FALSE(f.info.failover);
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("in a rollback a retry_on_other_backend retry stays on the stable backend") {
  Fixture f(
      "    stable: new\n"
      "    retry: {attempts: 2, backoff_base: 5ms, backoff_max: 5ms, retry_on_other_backend: "
      "true}\n");
  rollBack(f);
  f.start();
  REQUIRE(f.attempt.started.size() == 1);
  CHECK(f.attempt.started[0] == f.backend("new"));
  f.answer(503);
  uv_run(&f.loop, UV_RUN_DEFAULT);  // the backoff
  REQUIRE(f.attempt.started.size() == 2);
  CHECK(f.attempt.started[1] == f.backend("new"));
  f.answer(200);
  f.router->onAttemptComplete();
  f.router->reset();
  f.checkReleased();
}

namespace {
// The router's Fixture with metrics on: cutover_upstream_attempts_total and failovers readable.
struct MeteredFixture : Fixture {
  Metrics metrics{"test"};
  explicit MeteredFixture(const std::string& route_extra, const std::string& breaker = "")
      : Fixture(route_extra, breaker) {
    snap.metrics = metrics.forConfig(*snap.config);
    info.route = 0;
  }
  double attempts(const std::string& backend_name, AttemptOutcome o) const {
    return snap.metrics->routes[0].attempts[backend(backend_name)][static_cast<size_t>(o)]->Value();
  }
  double total(const std::string& backend_name) const {
    double n = 0;
    for (size_t o = 0; o < kAttemptOutcomeCount; ++o) {
      n += snap.metrics->routes[0].attempts[backend(backend_name)][o]->Value();
    }
    return n;
  }
  double failovers(const std::string& from, const std::string& to) const {
    const size_t n = snap.config->backends.size();
    return snap.metrics->routes[0].failovers[backend(from) * n + backend(to)]->Value();
  }
};
}  // namespace

TEST_CASE("a 503 retried on legacy counts a 5xx attempt for new, a 2xx for legacy, one failover") {
  MeteredFixture f(
      "    retry: {attempts: 2, backoff_base: 5ms, backoff_max: 5ms, retry_on_other_backend: "
      "true}\n");
  f.start();
  f.answer(503);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  f.answer(200);
  CHECK(f.total("legacy") == 0);  // counted when the attempt ends, not at its head
  f.router->onAttemptComplete();
  f.router->reset();
  CHECK(f.attempts("new", AttemptOutcome::Status5xx) == 1);
  CHECK(f.total("new") == 1);
  CHECK(f.attempts("legacy", AttemptOutcome::Status2xx) == 1);
  CHECK(f.total("legacy") == 1);
  CHECK(f.failovers("new", "legacy") == 1);
  CHECK(f.failovers("legacy", "new") == 0);
}

TEST_CASE("each way an attempt ends is counted once under its outcome") {
  using F = UpstreamCallbacks::Failure;
  for (auto [failure, outcome] :
       {std::pair{F::Connect, AttemptOutcome::ConnectError},
        std::pair{F::Timeout, AttemptOutcome::Timeout}, std::pair{F::Reset, AttemptOutcome::Reset},
        std::pair{F::BadResponse, AttemptOutcome::BadResponse}}) {
    MeteredFixture f("");
    f.start();
    f.router->onAttemptFailed(failure);
    f.router->reset();
    CHECK(f.attempts("new", outcome) == 1);
    CHECK(f.total("new") == 1);
  }
  SUBCASE("a reset after a 200 head is a reset, not a 2xx") {
    MeteredFixture f("");
    f.start();
    f.answer(200);
    f.router->onAttemptFailed(F::Reset);
    f.router->reset();
    CHECK(f.attempts("new", AttemptOutcome::Reset) == 1);
    CHECK(f.total("new") == 1);
  }
  SUBCASE("the client going away is cancelled; the request deadline is a timeout") {
    MeteredFixture f("");
    f.start();
    f.router->abandon();
    f.router->reset();
    CHECK(f.attempts("new", AttemptOutcome::Cancelled) == 1);
    MeteredFixture g("");
    g.start();
    g.router->abandon(AttemptOutcome::Timeout);
    g.router->reset();
    CHECK(g.attempts("new", AttemptOutcome::Timeout) == 1);
    CHECK(g.total("new") == 1);
  }
  SUBCASE("an unrequested 101 is a bad response") {
    MeteredFixture f("");
    f.start();
    f.answer(101);
    f.router->reset();
    CHECK(f.attempts("new", AttemptOutcome::BadResponse) == 1);
    CHECK(f.total("new") == 1);
  }
}

TEST_CASE("refusals are not attempts: a connection limit at start, an open breaker's failover") {
  SUBCASE("limit") {
    MeteredFixture f("");
    f.attempt.next = Reason::MaxConnections;
    f.start();
    f.router->reset();
    CHECK(f.total("new") == 0);
  }
  SUBCASE("breaker open: the fallback takes the attempt, and a failover is counted") {
    MeteredFixture f("    fallback: legacy\n",
                     ", circuit_breaker: {consecutive_failures: 1, failure_on: [5xx]}");
    f.snap.backends[f.backend("new")].breaker->onFailure(monotonicNs());
    f.start();
    f.answer(200);
    f.router->onAttemptComplete();
    f.router->reset();
    CHECK(f.total("new") == 0);
    CHECK(f.attempts("legacy", AttemptOutcome::Status2xx) == 1);
    CHECK(f.failovers("new", "legacy") == 1);
  }
}

TEST_CASE(
    "a backend over its own rate limit sends the request to the fallback, counted once placed") {
  MeteredFixture f("    fallback: legacy\n", ", rate_limit: {rate: 1/min}");
  f.start();
  REQUIRE(f.attempt.started.size() == 1);
  CHECK(f.attempt.started[0] == f.backend("new"));
  f.answer(200);
  f.router->onAttemptComplete();
  f.router->reset();
  f.info = StreamInfo{};
  f.info.route = 0;
  f.router->bind(f.snap);  // as the stream does for each request
  f.start();               // new's one token is gone
  REQUIRE(f.attempt.started.size() == 2);
  CHECK(f.attempt.started[1] == f.backend("legacy"));
  CHECK(f.info.failover);
  CHECK(f.failovers("new", "legacy") == 1);
  CHECK(f.stream.local_replies.empty());
  f.answer(200);
  f.router->onAttemptComplete();
  f.router->reset();
  f.checkReleased();
}

TEST_CASE("over its rate limit without a fallback: 429, and no failover is counted") {
  MeteredFixture f("", ", rate_limit: {rate: 1/min}");
  f.start();
  f.answer(200);
  f.router->onAttemptComplete();
  f.router->reset();
  f.info = StreamInfo{};
  f.info.route = 0;
  f.router->bind(f.snap);
  f.start();
  REQUIRE(f.stream.local_replies.size() == 1);
  CHECK(f.stream.local_replies[0].first == 429);
  CHECK_FALSE(f.info.failover);
  CHECK(f.failovers("new", "legacy") == 0);
  f.router->reset();
  f.checkReleased();
}
