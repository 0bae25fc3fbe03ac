#include "common/reason.h"

namespace cutover {

std::string_view reasonName(Reason r) {
  switch (r) {
    case Reason::None:
      return "none";
    case Reason::BadRequest:
      return "bad_request";
    case Reason::HeadersTooLarge:
      return "headers_too_large";
    case Reason::UriTooLong:
      return "uri_too_long";
    case Reason::HeaderTimeout:
      return "header_timeout";
    case Reason::NoRoute:
      return "no_route";
    case Reason::NoEndpoint:
      return "no_endpoint";
    case Reason::UpstreamConnectFailure:
      return "upstream_connect_failure";
    case Reason::UpstreamTimeout:
      return "upstream_timeout";
    case Reason::UpstreamReset:
      return "upstream_reset";
    case Reason::BadUpstreamResponse:
      return "bad_upstream_response";
    case Reason::RequestTimeout:
      return "request_timeout";
    case Reason::RateLimited:
      return "rate_limited";
    case Reason::CircuitOpen:
      return "circuit_open";
    case Reason::MaxConnections:
      return "max_connections";
    case Reason::MaxPending:
      return "max_pending";
    case Reason::MaxInflight:
      return "max_inflight";
    case Reason::Draining:
      return "draining";
    case Reason::MethodNotAllowed:
      return "method_not_allowed";
    case Reason::ExpectationFailed:
      return "expectation_failed";
    case Reason::VersionNotSupported:
      return "version_not_supported";
    case Reason::InvalidPath:
      return "invalid_path";
    case Reason::PayloadTooLarge:
      return "payload_too_large";
    case Reason::UpstreamTlsVerifyFailed:
      return "upstream_tls_verify_failed";
    case Reason::Count:
      break;
  }
  return "unknown";
}

}  // namespace cutover
