// The slots one request holds on backends: an in-flight slot (max_inflight) and a place in the
// retry budget's request count on the backend it was routed to, a pending-connect slot
// (max_pending) while a new connection is being made, and an active retry on the backend a retry
// goes to. Each is taken through the lease and given back by it exactly once: by the matching
// end call, or by the destructor (or a move-assignment over it), whichever comes first. No other
// code releases them, so no exit path (success, reset, timeout, client abort, retry) can leak or
// double-release one.
//
// The lease holds raw pointers into the Snapshot's BackendRuntime: its owner keeps that snapshot
// alive for at least as long as the lease.
#pragma once

#include "config/config.h"
#include "filters/filter.h"

namespace cutover {

class ConcurrencyLimits;
class RetryBudget;
struct BackendRuntime;

class BackendLease {
 public:
  BackendLease() = default;
  ~BackendLease() { releaseAll(); }
  BackendLease(const BackendLease&) = delete;
  BackendLease& operator=(const BackendLease&) = delete;
  BackendLease(BackendLease&& o) noexcept { *this = std::move(o); }
  BackendLease& operator=(BackendLease&& o) noexcept;

  // The request is admitted to `rt`: takes an in-flight slot (Reason::MaxInflight when the
  // backend has none free; nothing is held then) and counts the request in its retry budget.
  Reason admit(const BackendRuntime& rt);
  // A new connection is about to be made to `rt`: takes a pending slot.
  Reason acquirePending(const BackendRuntime& rt);
  // The connection is up (or failed): the pending slot goes back. No-op when none is held.
  void releasePending();
  // A retry to `rt`: true when its retry budget allows one (the slot is then held until
  // endRetry() or the end of the lease). Any retry held before is given back first.
  bool tryStartRetry(const BackendRuntime& rt, const config::Retry& policy);
  void endRetry();

  bool holdsInflight() const { return inflight_ != nullptr; }
  bool holdsRetry() const { return retry_ != nullptr; }

 private:
  void releaseAll();

  ConcurrencyLimits* inflight_ = nullptr;
  RetryBudget* budget_ = nullptr;
  ConcurrencyLimits* pending_ = nullptr;
  RetryBudget* retry_ = nullptr;
};

}  // namespace cutover
