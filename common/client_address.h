// The real client's address behind trusted proxies (load balancers, ingress), from the TCP peer
// and X-Forwarded-For, in the two models operators know from Envoy and nginx:
//   - a number of trusted hops (Envoy's xff_num_trusted_hops): the N proxies in front of cutover
//     each appended the address they saw, so the client is the N-th X-Forwarded-For entry from
//     the right;
//   - trusted CIDRs (nginx's set_real_ip_from with real_ip_recursive): when the peer is trusted,
//     X-Forwarded-For is walked from the right past trusted addresses; the first untrusted one is
//     the client.
// Anything that does not add up (fewer entries than trusted hops, an entry that is not an IP
// address) falls back to the TCP peer: a client can lie in X-Forwarded-For, but only to the left
// of what trusted proxies appended.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cutover {

class HeaderMap;

// An IPv4 or IPv6 address in network byte order; IPv4 uses the first four bytes.
struct IpAddress {
  uint8_t family = 0;  // 4 or 6; 0 = none
  std::array<uint8_t, 16> bytes{};
};

// Parses a textual IPv4 or IPv6 address (no port, no brackets, no zone). False if it is not one.
bool parseIp(std::string_view text, IpAddress& out);

struct Cidr {
  IpAddress base;      // host bits cleared
  uint8_t prefix = 0;  // 0..32 or 0..128

  bool contains(const IpAddress& a) const;
};

// "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128). False on anything else, or when
// bits are set below the prefix (a typo more often than not: "10.1.0.0/8").
bool parseCidr(std::string_view text, Cidr& out);

// "10.0.0.0/8", "fd00::/8" (always with the prefix).
std::string formatCidr(const Cidr& c);

struct TrustedProxies {
  uint32_t hops = 0;        // xff_num_trusted_hops
  std::vector<Cidr> cidrs;  // trusted_proxies
  bool enabled() const { return hops > 0 || !cidrs.empty(); }
};

struct ClientAddress {
  std::string_view address;   // the real client (a view into `peer` or into a header value)
  bool peer_trusted = false;  // the TCP peer is a trusted proxy (its X-Forwarded-Proto is kept)
  bool from_xff = false;      // the address came from X-Forwarded-For
};

// The client of a request that arrived from `peer` with `headers`. Views stay valid as long as
// `peer` and `headers` do.
ClientAddress resolveClientAddress(std::string_view peer, const HeaderMap& headers,
                                   const TrustedProxies& trusted);

}  // namespace cutover
