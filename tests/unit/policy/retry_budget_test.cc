#include "policy/retry_budget.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>

using namespace cutover;

TEST_CASE("retry budget: at least 3 concurrent retries, else 20% of requests in flight") {
  RetryBudget budget;
  CHECK(budget.limit(0.2, 3) == 3);
  // No requests in flight: the minimum still allows 3.
  CHECK(budget.tryStartRetry());
  CHECK(budget.tryStartRetry());
  CHECK(budget.tryStartRetry());
  CHECK_FALSE(budget.tryStartRetry());
  CHECK(budget.rejected() == 1);
  CHECK(budget.activeRetries() == 3);

  for (int i = 0; i < 19; ++i) budget.startRequest();
  CHECK(budget.limit(0.2, 3) == 3);  // floor(3.8) = 3
  CHECK_FALSE(budget.tryStartRetry());
  budget.startRequest();  // 20 in flight: 4 retries
  CHECK(budget.limit(0.2, 3) == 4);
  CHECK(budget.tryStartRetry());
  CHECK_FALSE(budget.tryStartRetry());

  for (int i = 0; i < 30; ++i) budget.startRequest();  // 50 in flight: 10
  CHECK(budget.limit(0.2, 3) == 10);
  int started = 0;
  while (budget.tryStartRetry()) ++started;
  CHECK(started == 6);
  CHECK(budget.activeRetries() == 10);

  budget.endRetry();
  CHECK(budget.activeRetries() == 9);
  CHECK(budget.tryStartRetry());
  for (int i = 0; i < 50; ++i) budget.endRequest();
  CHECK(budget.activeRequests() == 0);
  CHECK_FALSE(budget.tryStartRetry());
}

TEST_CASE("retry budget takes the route's ratio and minimum") {
  RetryBudget budget;
  config::Retry policy;
  policy.budget_ratio = 0.5;
  policy.budget_min = 1;
  for (int i = 0; i < 10; ++i) budget.startRequest();
  int started = 0;
  while (budget.tryStartRetry(policy)) ++started;
  CHECK(started == 5);
}

TEST_CASE("retry budget is exact under two threads") {
  RetryBudget budget;
  for (int i = 0; i < 100; ++i) budget.startRequest();  // limit 20
  std::atomic<int> started{0};
  auto worker = [&] {
    for (int i = 0; i < 50'000; ++i) started += budget.tryStartRetry() ? 1 : 0;
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  CHECK(started.load() == 20);
}

TEST_CASE("shouldRetry") {
  config::Retry p;
  p.enabled = true;
  p.attempts = 2;

  SUBCASE("disabled policy never retries") {
    p.enabled = false;
    CHECK_FALSE(shouldRetry(p, Outcome::ConnectError, 0, true, false, 1));
  }
  SUBCASE("listed statuses, connect errors, resets and timeouts") {
    CHECK(shouldRetry(p, Outcome::Status, 502, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Status, 503, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Status, 504, true, false, 1));
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 500, true, false, 1));
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 200, true, false, 1));
    CHECK(shouldRetry(p, Outcome::ConnectError, 0, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Reset, 0, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Timeout, 0, true, false, 1));
    CHECK_FALSE(shouldRetry(p, Outcome::Success, 200, true, false, 1));
    p.on_timeout = false;
    CHECK_FALSE(shouldRetry(p, Outcome::Timeout, 0, true, false, 1));
  }
  SUBCASE("never on 429, even when listed") {
    p.on_status = {429, 503};
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 429, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Status, 503, true, false, 1));
  }
  SUBCASE("attempts: 2 retries after the first attempt") {
    CHECK(shouldRetry(p, Outcome::Status, 503, true, false, 1));
    CHECK(shouldRetry(p, Outcome::Status, 503, true, false, 2));
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 503, true, false, 3));
  }
  SUBCASE("non-idempotent requests") {
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 503, false, false, 1));
    CHECK_FALSE(shouldRetry(p, Outcome::Reset, 0, false, false, 1));
    CHECK(shouldRetry(p, Outcome::ConnectError, 0, false, false, 1));  // nothing was sent
    p.idempotent_only = false;
    CHECK(shouldRetry(p, Outcome::Status, 503, false, false, 1));
  }
  SUBCASE("a body already sent cannot be replayed") {
    p.idempotent_only = false;
    CHECK_FALSE(shouldRetry(p, Outcome::Reset, 0, true, true, 1));
    CHECK_FALSE(shouldRetry(p, Outcome::Status, 503, false, true, 1));
  }
}
