// StreamInfo: what happened during one request/response exchange. A leaf type, filled by the
// stream and the router as the exchange goes, read by filters' onComplete, the access log, /stats
// and metrics.
#pragma once

#include <cstdint>

#include "common/reason.h"

namespace cutover {

// What happened during one exchange: filled as it goes, read by onComplete, logs and metrics.
struct StreamInfo {
  int64_t start_ns = 0;             // head complete (monotonic)
  int64_t upstream_start_ns = 0;    // first attempt sent
  int64_t upstream_headers_ns = 0;  // response head received
  int64_t end_ns = 0;
  int route = -1;                     // index into Config::routes
  int backend = -1;                   // backend that served (or was last tried)
  int endpoint = -1;                  // endpoint index within that backend
  uint16_t status = 0;                // status sent to the client (0 = none sent)
  uint16_t attempts = 0;              // upstream attempts made
  Reason reason = Reason::None;       // set when the proxy answered itself or failed upstream
  bool rate_limited_dry_run = false;  // a dry-run limiter would have rejected this request
  bool failover = false;              // split choice replaced by the fallback backend
  bool retry_refused = false;         // a retry the policy allowed was refused by the budget
  bool override_refused = false;      // override header ignored: a rollback took that backend out
  bool client_aborted = false;
  uint64_t bytes_in = 0;   // request body bytes from the client
  uint64_t bytes_out = 0;  // response body bytes to the client
};

}  // namespace cutover
