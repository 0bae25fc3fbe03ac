// PROXY protocol v1 and v2 headers: whole, byte by byte, LOCAL/UNKNOWN, and malformed ones.
#include "net/proxy_protocol.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace cutover;

namespace {

std::string v2(uint8_t ver_cmd, uint8_t fam, const std::string& body) {
  std::string s("\r\n\r\n\0\r\nQUIT\n", 12);
  s.push_back(static_cast<char>(ver_cmd));
  s.push_back(static_cast<char>(fam));
  s.push_back(static_cast<char>(body.size() >> 8));
  s.push_back(static_cast<char>(body.size() & 0xff));
  return s + body;
}

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

// Parses `wire` fed one byte more at a time: NeedMore until the header is whole, then Done.
ProxyParse feed(const std::string& wire, ProxyHeader& out, size_t& consumed) {
  for (size_t n = 1; n < wire.size(); ++n) {
    ProxyParse r = parseProxyHeader(wire.data(), n, out, consumed);
    if (r != ProxyParse::NeedMore) return r;
  }
  return parseProxyHeader(wire.data(), wire.size(), out, consumed);
}

}  // namespace

TEST_CASE("v1 TCP4 and TCP6: source address and port, the rest is the client's stream") {
  ProxyHeader h;
  size_t used = 0;
  std::string wire = "PROXY TCP4 198.51.100.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n";
  REQUIRE(parseProxyHeader(wire.data(), wire.size(), h, used) == ProxyParse::Done);
  CHECK(h.version == 1);
  CHECK(h.source == "198.51.100.7");
  CHECK(h.source_port == 51234);
  CHECK(wire.substr(used) == "GET / HTTP/1.1\r\n");

  std::string six = "PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n";
  REQUIRE(feed(six, h, used) == ProxyParse::Done);
  CHECK(h.source == "2001:db8::7");
  CHECK(used == six.size());
}

TEST_CASE("v1 UNKNOWN keeps the connection's peer") {
  ProxyHeader h;
  size_t used = 0;
  std::string wire = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
  REQUIRE(feed(wire, h, used) == ProxyParse::Done);
  CHECK(h.source.empty());
  CHECK(used == wire.size());
}

TEST_CASE("v1 malformed headers are refused") {
  for (const char* bad :
       {"PROXY TCP4 198.51.100.7 10.0.0.1 51234\r\n",
        "PROXY TCP4 198.51.100.7 10.0.0.1 51234 80 extra\r\n",
        "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n", "PROXY TCP6 198.51.100.7 2001:db8::1 1 2\r\n",
        "PROXY TCP4 198.51.100.7 10.0.0.1 65536 80\r\n",
        "PROXY TCP4 198.51.100.7 10.0.0.1 051 80\r\n", "PROXY TCP4 198.51.100.7  10.0.0.1 1 80\r\n",
        "PROXY UDP4 a b 1 2\r\n", "PROXY \r\n", "GET / HTTP/1.1\r\n",
        "proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"}) {
    INFO(bad);
    ProxyHeader h;
    size_t used = 0;
    CHECK(parseProxyHeader(bad, std::strlen(bad), h, used) == ProxyParse::Invalid);
  }
  // No CRLF within 107 bytes.
  std::string endless = "PROXY TCP4 " + std::string(200, '1');
  ProxyHeader h;
  size_t used = 0;
  CHECK(parseProxyHeader(endless.data(), endless.size(), h, used) == ProxyParse::Invalid);
}

TEST_CASE("v2 PROXY over IPv4 and IPv6, with TLVs after the addresses") {
  ProxyHeader h;
  size_t used = 0;
  std::string body4 = bytes({198, 51, 100, 7, 10, 0, 0, 1, 0xc8, 0x22, 0, 80}) + "\x04\x00\x01z";
  std::string wire = v2(0x21, 0x11, body4) + "GET";
  REQUIRE(feed(wire, h, used) == ProxyParse::Done);
  CHECK(h.version == 2);
  CHECK(h.source == "198.51.100.7");
  CHECK(h.source_port == 51234);
  CHECK(wire.substr(used) == "GET");

  std::string src6 = bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7});
  std::string body6 = src6 + std::string(16, '\0') + bytes({1, 187, 0, 80});
  REQUIRE(feed(v2(0x21, 0x21, body6), h, used) == ProxyParse::Done);
  CHECK(h.source == "2001:db8::7");
  CHECK(h.source_port == 443);
}

TEST_CASE("v2 LOCAL and UNSPEC keep the connection's peer") {
  ProxyHeader h;
  size_t used = 0;
  REQUIRE(feed(v2(0x20, 0x00, ""), h, used) == ProxyParse::Done);
  CHECK(h.source.empty());
  CHECK(used == 16);
  REQUIRE(feed(v2(0x21, 0x00, "ab"), h, used) == ProxyParse::Done);
  CHECK(h.source.empty());
  CHECK(used == 18);
}

TEST_CASE("v2 malformed headers are refused") {
  ProxyHeader h;
  size_t used = 0;
  auto refused = [&](const std::string& wire) {
    return parseProxyHeader(wire.data(), wire.size(), h, used) == ProxyParse::Invalid;
  };
  CHECK(refused(v2(0x11, 0x11, std::string(12, '\0'))));  // version 1 in a v2 signature
  CHECK(refused(v2(0x22, 0x11, std::string(12, '\0'))));  // command 2
  CHECK(refused(v2(0x21, 0x11, std::string(8, '\0'))));   // too short for IPv4 addresses
  CHECK(refused(v2(0x21, 0x21, std::string(20, '\0'))));  // too short for IPv6 addresses
  CHECK(refused(v2(0x21, 0x41, std::string(12, '\0'))));  // family 4
  CHECK(refused(v2(0x21, 0x13, std::string(12, '\0'))));  // transport 3
  // A length beyond the bound is refused from the fixed part alone.
  std::string big = v2(0x21, 0x11, "");
  big[14] = 0x10;
  CHECK(refused(big));
}
