// BackendLease: every slot a request takes on a backend is given back exactly once, on every path.
#include "proxy/backend_lease.h"

#include <doctest/doctest.h>

#include <memory>

#include "policy/circuit_breaker.h"
#include "policy/retry_budget.h"
#include "proxy/snapshot.h"

using namespace cutover;

namespace {

BackendRuntime runtime(uint32_t max_inflight, uint32_t max_pending) {
  config::CircuitBreaker cb;
  cb.max_inflight = max_inflight;
  cb.max_pending = max_pending;
  BackendRuntime rt;
  rt.limits = std::make_shared<ConcurrencyLimits>(cb);
  rt.budget = std::make_shared<RetryBudget>();
  return rt;
}

void checkEmpty(const BackendRuntime& rt) {
  CHECK(rt.limits->inflight() == 0);
  CHECK(rt.limits->pending() == 0);
  CHECK(rt.budget->activeRequests() == 0);
  CHECK(rt.budget->activeRetries() == 0);
}

}  // namespace

TEST_CASE("a lease's destructor gives back the in-flight slot and the budget count it took") {
  BackendRuntime rt = runtime(2, 2);
  {
    BackendLease lease;
    REQUIRE(lease.admit(rt) == Reason::None);
    CHECK(rt.limits->inflight() == 1);
    CHECK(rt.budget->activeRequests() == 1);
    REQUIRE(lease.acquirePending(rt) == Reason::None);
    CHECK(rt.limits->pending() == 1);
  }
  checkEmpty(rt);
}

TEST_CASE("a refused admission holds nothing") {
  BackendRuntime rt = runtime(1, 1);
  BackendLease first;
  REQUIRE(first.admit(rt) == Reason::None);
  {
    BackendLease second;
    CHECK(second.admit(rt) == Reason::MaxInflight);
    CHECK_FALSE(second.holdsInflight());
    CHECK(rt.limits->inflight() == 1);
    CHECK(rt.budget->activeRequests() == 1);
  }
  CHECK(rt.limits->inflight() == 1);
  first = BackendLease();  // move-assignment releases what the old lease held
  checkEmpty(rt);
}

TEST_CASE("the pending slot goes back once, when connected or failed, never again at the end") {
  BackendRuntime rt = runtime(0, 1);
  BackendLease lease;
  REQUIRE(lease.admit(rt) == Reason::None);
  REQUIRE(lease.acquirePending(rt) == Reason::None);
  BackendLease other;
  CHECK(other.acquirePending(rt) == Reason::MaxPending);
  lease.releasePending();
  lease.releasePending();
  CHECK(rt.limits->pending() == 0);
  // A second attempt (a retry on a fresh connection) takes and returns its own slot.
  REQUIRE(lease.acquirePending(rt) == Reason::None);
  CHECK(rt.limits->pending() == 1);
  lease = BackendLease();
  checkEmpty(rt);
}

TEST_CASE("retries: one active retry per lease, refused by an exhausted budget, released once") {
  BackendRuntime a = runtime(0, 0);
  BackendRuntime b = runtime(0, 0);
  config::Retry policy;
  policy.budget_ratio = 0.0;
  policy.budget_min = 1;
  {
    BackendLease lease;
    REQUIRE(lease.admit(a) == Reason::None);
    REQUIRE(lease.tryStartRetry(b, policy));  // retry on the other backend
    CHECK(b.budget->activeRetries() == 1);
    BackendLease other;
    CHECK_FALSE(other.tryStartRetry(b, policy));  // budget of 1 taken
    CHECK_FALSE(other.holdsRetry());
    // The next retry of the same request gives back the previous one first.
    REQUIRE(lease.tryStartRetry(b, policy));
    CHECK(b.budget->activeRetries() == 1);
    REQUIRE(lease.tryStartRetry(a, policy));
    CHECK(b.budget->activeRetries() == 0);
    CHECK(a.budget->activeRetries() == 1);
  }
  checkEmpty(a);
  checkEmpty(b);
}

TEST_CASE("moving a lease transfers its slots; only the destination releases them") {
  BackendRuntime rt = runtime(1, 1);
  BackendLease src;
  REQUIRE(src.admit(rt) == Reason::None);
  BackendLease dst(std::move(src));
  CHECK_FALSE(src.holdsInflight());
  CHECK(dst.holdsInflight());
  src = BackendLease();
  CHECK(rt.limits->inflight() == 1);
  dst = BackendLease();
  checkEmpty(rt);
}
