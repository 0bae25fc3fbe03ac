// Active health checks, run on the main thread's loop: one probe per endpoint of every backend
// with a health_check section. Each probe sends `GET <path>` on a fresh connection, counts a 2xx or
// 3xx answer within the timeout as a pass, and feeds the result to the backend's HealthState
// (shared with the workers, which skip unhealthy endpoints and fail over when none is left). The
// HealthState decides the next delay: the normal interval, or a growing backoff while down.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <string>

#include "proxy/snapshot.h"

namespace cutover {

class HealthChecker {
 public:
  explicit HealthChecker(uv_loop_t* loop);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Starts probes for `snap`'s checked endpoints, keeps those whose state carried over, stops the
  // rest.
  void update(const Snapshot& snap);
  // Stops every probe; their handles close on later loop turns.
  void stop();

  struct Probe;

 private:
  uv_loop_t* loop_;
  std::map<std::string, Probe*> probes_;  // key: backend|endpoint
};

}  // namespace cutover
