// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that an L4 load balancer (AWS NLB,
// HAProxy `send-proxy`, many ingress controllers) puts before the client's bytes, so that a proxy
// behind it learns the client's address. Parsed once per connection, before any HTTP byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cutover {

struct ProxyHeader {
  // The source address the balancer saw, as text ("198.51.100.7", "2001:db8::7"); empty for a
  // LOCAL command (the balancer's own health check) or an UNKNOWN/unspecified family, where the
  // connection's own peer stands.
  std::string source;
  uint16_t source_port = 0;
  uint8_t version = 0;  // 1 or 2
};

enum class ProxyParse : uint8_t {
  NeedMore,  // a valid prefix; read more (the caller bounds how much)
  Done,      // `consumed` bytes were the header; what follows is the client's stream
  Invalid,   // not a PROXY header, or a malformed one: close the connection
};

// The longest header accepted: v1's maximum is 107 bytes; v2 carries TLVs after the addresses
// (AWS adds a VPC endpoint id), bounded here to keep a connection's pre-HTTP buffer small.
inline constexpr size_t kMaxProxyHeader = 16 + 1024;

// Parses a header at the start of `data`. Never reads past `len`.
ProxyParse parseProxyHeader(const char* data, size_t len, ProxyHeader& out, size_t& consumed);

}  // namespace cutover
