// The real client behind trusted proxies: hops and CIDR models, spoofing attempts, fallbacks.
#include "common/client_address.h"

#include <doctest/doctest.h>

#include <string>

#include "common/http_message.h"

using namespace cutover;

namespace {

HeaderMap xff(std::initializer_list<const char*> lines) {
  HeaderMap h;
  h.add("Host", "example");
  for (const char* l : lines) h.add("X-Forwarded-For", l);
  return h;
}

TrustedProxies cidrs(std::initializer_list<const char*> list) {
  TrustedProxies t;
  for (const char* c : list) {
    Cidr cidr;
    REQUIRE(parseCidr(c, cidr));
    t.cidrs.push_back(cidr);
  }
  return t;
}

TrustedProxies hops(uint32_t n) {
  TrustedProxies t;
  t.hops = n;
  return t;
}

std::string client(std::string_view peer, const HeaderMap& h, const TrustedProxies& t) {
  return std::string(resolveClientAddress(peer, h, t).address);
}

}  // namespace

TEST_CASE("nothing trusted: the TCP peer, whatever X-Forwarded-For says") {
  HeaderMap h = xff({"203.0.113.9"});
  ClientAddress c = resolveClientAddress("10.0.0.5", h, TrustedProxies{});
  CHECK(c.address == "10.0.0.5");
  CHECK_FALSE(c.peer_trusted);
  CHECK_FALSE(c.from_xff);
}

TEST_CASE("hops: the N-th entry from the right, across header lines") {
  HeaderMap h = xff({"198.51.100.1, 203.0.113.9", "192.0.2.44"});
  CHECK(client("10.0.0.5", h, hops(1)) == "192.0.2.44");
  CHECK(client("10.0.0.5", h, hops(2)) == "203.0.113.9");
  CHECK(client("10.0.0.5", h, hops(3)) == "198.51.100.1");
  // Fewer entries than trusted hops: somebody bypassed a proxy; the peer is all we know.
  CHECK(client("10.0.0.5", h, hops(4)) == "10.0.0.5");
  // ... and nothing of it is trusted, not even its X-Forwarded-Proto.
  CHECK_FALSE(resolveClientAddress("10.0.0.5", h, hops(4)).peer_trusted);
  CHECK_FALSE(resolveClientAddress("10.0.0.5", xff({}), hops(1)).peer_trusted);
  CHECK(client("10.0.0.5", xff({}), hops(1)) == "10.0.0.5");
  CHECK(resolveClientAddress("10.0.0.5", h, hops(1)).peer_trusted);
}

TEST_CASE("hops: a client's forged entries stay left of what the trusted proxy appended") {
  // The client sent "X-Forwarded-For: 1.1.1.1"; the load balancer appended the address it saw.
  HeaderMap h = xff({"1.1.1.1, 203.0.113.9"});
  CHECK(client("10.0.0.5", h, hops(1)) == "203.0.113.9");
}

TEST_CASE("hops: an entry that is not an IP address falls back to the peer") {
  CHECK(client("10.0.0.5", xff({"unknown"}), hops(1)) == "10.0.0.5");
  CHECK(client("10.0.0.5", xff({"203.0.113.9:443"}), hops(1)) == "10.0.0.5");
  CHECK(client("10.0.0.5", xff({" 2001:db8::7 "}), hops(1)) == "2001:db8::7");
  CHECK(client("10.0.0.5", xff({"203.0.113.9,"}), hops(1)) == "10.0.0.5");
}

TEST_CASE("cidrs: only a trusted peer's X-Forwarded-For is read, right to left past proxies") {
  TrustedProxies t = cidrs({"10.0.0.0/8", "fd00::/8"});
  HeaderMap h = xff({"1.1.1.1, 203.0.113.9, 10.1.2.3"});
  CHECK(client("10.0.0.5", h, t) == "203.0.113.9");
  CHECK(client("192.0.2.1", h, t) == "192.0.2.1");  // untrusted peer: header ignored
  CHECK_FALSE(resolveClientAddress("192.0.2.1", h, t).peer_trusted);
  CHECK(client("fd00::1", h, t) == "203.0.113.9");
  CHECK(client("::ffff:10.0.0.5", h, t) == "203.0.113.9");  // v4-mapped peer
  // Every entry trusted: the leftmost is the best there is.
  CHECK(client("10.0.0.5", xff({"10.9.9.9, 10.1.2.3"}), t) == "10.9.9.9");
  // No header: the trusted peer itself.
  CHECK(client("10.0.0.5", xff({}), t) == "10.0.0.5");
  // Garbage in the chain before an untrusted address is found: the peer.
  CHECK(client("10.0.0.5", xff({"1.1.1.1, bogus, 10.1.2.3"}), t) == "10.0.0.5");
}

TEST_CASE("parseCidr: prefixes, bare addresses, host bits and garbage") {
  Cidr c;
  CHECK(parseCidr("10.0.0.0/8", c));
  CHECK(formatCidr(c) == "10.0.0.0/8");
  CHECK(parseCidr("192.0.2.7", c));
  CHECK(formatCidr(c) == "192.0.2.7/32");
  CHECK(parseCidr("::1", c));
  CHECK(formatCidr(c) == "::1/128");
  CHECK(parseCidr("0.0.0.0/0", c));
  CHECK(parseCidr("10.0.0.0/12", c));
  IpAddress a;
  REQUIRE(parseIp("10.15.255.255", a));
  CHECK(c.contains(a));
  REQUIRE(parseIp("10.16.0.0", a));
  CHECK_FALSE(c.contains(a));
  REQUIRE(parseIp("::ffff:10.1.0.0", a));
  CHECK(c.contains(a));
  // An IPv4-mapped range is the IPv4 range it maps.
  REQUIRE(parseCidr("::ffff:10.0.0.0/104", c));
  CHECK(formatCidr(c) == "10.0.0.0/8");
  REQUIRE(parseIp("10.9.8.7", a));
  CHECK(c.contains(a));
  REQUIRE(parseIp("::ffff:10.9.8.7", a));
  CHECK(c.contains(a));
  CHECK_FALSE(parseCidr("10.1.0.0/8", c));  // host bits set
  CHECK_FALSE(parseCidr("10.0.0.0/33", c));
  CHECK_FALSE(parseCidr("10.0.0.0/", c));
  CHECK_FALSE(parseCidr("10.0.0.0/8x", c));
  CHECK_FALSE(parseCidr("example.com", c));
  CHECK_FALSE(parseCidr("", c));
}
