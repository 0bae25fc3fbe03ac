// rate_limit: token-bucket admission per route and per key (client address, a header's value, or
// the whole route), answered with 429 and the IETF draft RateLimit-* headers.
//
// Each route's effective limit is its own `rate_limit:` or else the chain default (Config::
// rate_limit); routes with neither pass through. Every route with a limit has its own BucketTable,
// obtained from the StateStore under the key "route:<name>", so its buckets survive a reload that
// keeps the route and its limit. The tables are process-wide: every worker takes from the same
// buckets, so the configured rate is the rate for the whole proxy.
//
//   denied, mode enforce  → 429, Reason::RateLimited, headers
//                             Retry-After: N  RateLimit-Limit: <burst>  RateLimit-Remaining: 0
//                             RateLimit-Reset: N          (N = seconds until a token is back, ≥ 1)
//   denied, mode dry_run  → StreamInfo::rate_limited_dry_run = true, request continues (with
//                           response_headers: Remaining 0, Reset = seconds until a token is back)
//   allowed               → with response_headers (default), RateLimit-Limit/-Remaining/-Reset
//                           added to the response (Reset = seconds until the bucket is full)
//
// Keys: the client address; the first value of the configured header, where a request without
// that header (or with an empty value) is not counted, as in nginx's limit_req and Envoy's
// descriptors; or one bucket for the whole route. A key of any length costs the table the same
// fixed-size entry (its keyed 128-bit hash, see BucketTable), so a client sending 60 KB header
// values grows nothing but the LRU's count, which max_keys bounds.
//
// Backend-wide limits (Backend::rate_limit) are not this filter: the router takes a token from
// StateStore::backendLimiter(), a plain TokenBucket, after the split has picked the backend.
#pragma once

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "config/config.h"
#include "filters/filter.h"
#include "policy/state_store.h"
#include "policy/token_bucket.h"

namespace cutover {

class RateLimitFactory final : public FilterFactory {
 public:
  // A route's effective limit and the table holding its buckets.
  struct RouteLimit {
    config::RateLimit limit;
    std::shared_ptr<BucketTable> table;
  };

  // Resolves every route's effective limit and asks `store` for its table. Runs on the main
  // thread while a snapshot is built; `clock` must outlive the factory.
  RateLimitFactory(const config::Config& cfg, StateStore& store, const Clock& clock);
  static std::unique_ptr<FilterFactory> make(const config::Config& cfg, StateStore& store,
                                             const Clock& clock) {
    return std::make_unique<RateLimitFactory>(cfg, store, clock);
  }

  std::string_view name() const override { return "rate_limit"; }
  size_t filterSize() const override;
  Filter* createAt(void* mem) const override;

  // The limit for route index `route`, or null when the route has none.
  const RouteLimit* limitFor(int route) const;
  const Clock& clock() const { return clock_; }

 private:
  std::vector<std::optional<RouteLimit>> routes_;  // indexed like Config::routes
  const Clock& clock_;
};

class RateLimitFilter final : public Filter {
 public:
  explicit RateLimitFilter(const RateLimitFactory& factory) : factory_(factory) {}
  // Runs once the request head is complete and cb.info().route is set. Returns Responded after a
  // 429, else Continue.
  FilterStatus onRequest(FilterCallbacks& cb) override;

 private:
  const RateLimitFactory& factory_;
};

}  // namespace cutover
