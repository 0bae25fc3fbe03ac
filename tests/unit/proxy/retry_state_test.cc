// RetryState: retry decisions, the other-backend choice, budget exhaustion and the deadline, with
// its backoff timer run on a real libuv loop (no sockets).
#include "proxy/retry_state.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>

#include "policy/circuit_breaker.h"
#include "policy/retry_budget.h"
#include "tests/unit/proxy/test_snapshot.h"

using namespace cutover;

namespace {

struct Fixture {
  uv_loop_t loop;
  Snapshot snap;
  int fired = 0;
  std::unique_ptr<RetryState> retry;

  explicit Fixture(const std::string& retry_yaml) {
    uv_loop_init(&loop);
    std::string yaml =
        "listeners: [{name: public, address: '127.0.0.1:0'}]\n"
        "backends:\n"
        "  legacy: {endpoints: ['127.0.0.1:1']}\n"
        "  new: {endpoints: ['127.0.0.1:2']}\n"
        "routes:\n"
        "  - name: r\n"
        "    match: {prefix: /}\n"
        "    split: {new: 50, legacy: 50}\n"
        "    retry: " +
        retry_yaml + "\n";
    testing::loadSnapshot(snap, yaml);
    retry = std::make_unique<RetryState>(
        &loop, [](void* self) { ++static_cast<Fixture*>(self)->fired; }, this);
  }
  ~Fixture() {
    retry->close([](uv_handle_t*) {}, nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  uint32_t backend(const std::string& name) const { return testing::backendIndex(snap, name); }
  const config::Route& route() const { return snap.config->routes[0]; }
};

RetryState::Attempt failed(Outcome o, uint16_t status = 0, uint32_t attempts = 1) {
  RetryState::Attempt a;
  a.outcome = o;
  a.status = status;
  a.attempts = attempts;
  a.idempotent = true;
  return a;
}

}  // namespace

TEST_CASE("a 503 from new is retried on legacy with retry_on_other_backend, after the backoff") {
  Fixture f("{attempts: 2, backoff_base: 10ms, backoff_max: 10ms, retry_on_other_backend: true}");
  BackendLease lease;
  uint32_t n = f.backend("new"), l = f.backend("legacy");
  REQUIRE(f.retry->schedule(f.snap, f.route(), n, failed(Outcome::Status, 503), 10000, lease));
  CHECK(f.retry->target() == l);
  CHECK(f.retry->pending());
  CHECK(f.snap.backends[l].budget->activeRetries() == 1);
  CHECK(f.fired == 0);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(f.fired == 1);
  CHECK_FALSE(f.retry->pending());
  lease = BackendLease();
  CHECK(f.snap.backends[l].budget->activeRetries() == 0);
}

TEST_CASE("no retry without the policy, past its attempts, after body bytes, or on 429") {
  Fixture f("{attempts: 1, backoff_base: 1ms, backoff_max: 1ms}");
  BackendLease lease;
  uint32_t n = f.backend("new");
  CHECK_FALSE(
      f.retry->schedule(f.snap, f.route(), n, failed(Outcome::Status, 503, 2), 1000, lease));
  CHECK_FALSE(f.retry->schedule(f.snap, f.route(), n, failed(Outcome::Status, 429), 1000, lease));
  RetryState::Attempt body = failed(Outcome::Reset);
  body.body_started = true;
  CHECK_FALSE(f.retry->schedule(f.snap, f.route(), n, body, 1000, lease));
  RetryState::Attempt post = failed(Outcome::Reset);
  post.idempotent = false;
  CHECK_FALSE(f.retry->schedule(f.snap, f.route(), n, post, 1000, lease));
  // A connect error is retried for any method: nothing reached the backend.
  RetryState::Attempt post_connect = failed(Outcome::ConnectError);
  post_connect.idempotent = false;
  CHECK(f.retry->schedule(f.snap, f.route(), n, post_connect, 1000, lease));
  CHECK(f.retry->target() == n);
  f.retry->cancel();
  CHECK_FALSE(f.retry->pending());
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(f.fired == 0);  // cancelled: never fires
}

TEST_CASE("an exhausted retry budget refuses the retry and holds nothing") {
  Fixture f("{attempts: 3, budget_ratio: 0.0, budget_min: 1, backoff_base: 1ms, backoff_max: 1ms}");
  uint32_t n = f.backend("new");
  BackendLease first, second;
  REQUIRE(f.retry->schedule(f.snap, f.route(), n, failed(Outcome::Timeout), 1000, first));
  f.retry->cancel();
  CHECK_FALSE(f.retry->schedule(f.snap, f.route(), n, failed(Outcome::Timeout), 1000, second));
  CHECK_FALSE(second.holdsRetry());
  CHECK(f.retry->budgetRefused());
  CHECK(f.retry->target() == n);
  CHECK(f.snap.backends[n].budget->activeRetries() == 1);
}

TEST_CASE("a backoff that would end after the deadline is no retry, and gives its slot back") {
  Fixture f("{attempts: 3, backoff_base: 10ms, backoff_max: 1h}");
  uint32_t n = f.backend("new");
  BackendLease lease;
  RetryState::Attempt a = failed(Outcome::Status, 503);
  a.retry_after = std::chrono::seconds(10);  // the backend asks for 10 s; 150 ms are left
  CHECK_FALSE(f.retry->schedule(f.snap, f.route(), n, a, 150, lease));
  CHECK_FALSE(lease.holdsRetry());
  CHECK(f.snap.backends[n].budget->activeRetries() == 0);
}
