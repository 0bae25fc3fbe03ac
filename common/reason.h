// Reason: why the proxy answered a request itself, or why an upstream attempt failed. A leaf type:
// used as a metric label, an access-log field and the x-cutover-reason header.
#pragma once

#include <cstdint>
#include <string_view>

namespace cutover {

// Why the proxy answered by itself. Fixed list: used as a metric label and a log field.
enum class Reason : uint8_t {
  None = 0,
  BadRequest,       // malformed request framing or headers
  HeadersTooLarge,  // 431
  UriTooLong,       // 414
  HeaderTimeout,    // 408: headers not complete in time
  NoRoute,          // 404: no route matched
  NoEndpoint,       // 503: backend has no (healthy) endpoint
  UpstreamConnectFailure,
  UpstreamTimeout,
  UpstreamReset,
  BadUpstreamResponse,
  RequestTimeout,  // total request timeout
  RateLimited,     // 429
  CircuitOpen,     // 503
  MaxConnections,  // 503 breaker concurrency limits
  MaxPending,
  MaxInflight,
  Draining,                 // the drain deadline cut the exchange (SIGTERM, POST /drain)
  MethodNotAllowed,         // 405: CONNECT
  ExpectationFailed,        // 417: an Expect other than 100-continue
  VersionNotSupported,      // 505: not HTTP/1.x
  InvalidPath,              // 400: the path has a malformed escape, %00, or a rejected %2F / %5C
  PayloadTooLarge,          // 413: the request body is over limits.max_request_body_bytes
  UpstreamTlsVerifyFailed,  // 502: the backend's TLS certificate did not verify
  Count,
};
std::string_view reasonName(Reason r);

}  // namespace cutover
