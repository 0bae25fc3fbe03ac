#include "net/proxy_protocol.h"

#include <arpa/inet.h>

#include <cstring>
#include <string_view>

namespace cutover {

namespace {

constexpr char kV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                   '\n', 'Q',  'U',  'I',  'T',  '\n'};
constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV1Max = 107;  // the spec's bound, CRLF included

bool parsePort(std::string_view s, uint16_t& out) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

bool validAddress(int family, std::string_view s) {
  char buf[64];
  unsigned char bin[16];
  if (s.empty() || s.size() >= sizeof buf) return false;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  return inet_pton(family, buf, bin) == 1;
}

// "PROXY TCP4 198.51.100.7 10.0.0.1 51234 80\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN ...\r\n".
ProxyParse parseV1(const char* data, size_t len, ProxyHeader& out, size_t& consumed) {
  std::string_view in(data, len < kV1Max ? len : kV1Max);
  size_t crlf = in.find("\r\n");
  if (crlf == std::string_view::npos) {
    return len >= kV1Max ? ProxyParse::Invalid : ProxyParse::NeedMore;
  }
  std::string_view line = in.substr(kV1Prefix.size(), crlf - kV1Prefix.size());
  std::string_view parts[5];
  size_t n = 0;
  while (!line.empty() && n < 5) {
    size_t sp = line.find(' ');
    parts[n++] = line.substr(0, sp);
    if (sp == std::string_view::npos) {
      line = {};
    } else {
      line.remove_prefix(sp + 1);
    }
  }
  if (n == 0) return ProxyParse::Invalid;
  out = ProxyHeader{};
  out.version = 1;
  consumed = crlf + 2;
  if (parts[0] == "UNKNOWN") return ProxyParse::Done;  // the rest of the line is ignored
  int family = parts[0] == "TCP4" ? AF_INET : parts[0] == "TCP6" ? AF_INET6 : -1;
  if (family < 0 || n != 5 || !line.empty()) return ProxyParse::Invalid;
  uint16_t dport = 0;
  if (!validAddress(family, parts[1]) || !validAddress(family, parts[2]) ||
      !parsePort(parts[3], out.source_port) || !parsePort(parts[4], dport)) {
    return ProxyParse::Invalid;
  }
  out.source = std::string(parts[1]);
  return ProxyParse::Done;
}

ProxyParse parseV2(const char* data, size_t len, ProxyHeader& out, size_t& consumed) {
  if (len < 16) return ProxyParse::NeedMore;
  auto b = reinterpret_cast<const unsigned char*>(data);
  if ((b[12] >> 4) != 2) return ProxyParse::Invalid;  // version
  unsigned command = b[12] & 0x0f;                    // 0 LOCAL, 1 PROXY
  if (command > 1) return ProxyParse::Invalid;
  size_t body = (static_cast<size_t>(b[14]) << 8) | b[15];
  if (16 + body > kMaxProxyHeader) return ProxyParse::Invalid;
  if (len < 16 + body) return ProxyParse::NeedMore;
  out = ProxyHeader{};
  out.version = 2;
  consumed = 16 + body;
  if (command == 0) return ProxyParse::Done;  // LOCAL: the balancer itself speaking
  unsigned family = b[13] >> 4, transport = b[13] & 0x0f;
  if (transport > 2) return ProxyParse::Invalid;
  char text[INET6_ADDRSTRLEN] = {0};
  const unsigned char* addr = b + 16;
  if (family == 1) {  // AF_INET: src 4, dst 4, sport 2, dport 2
    if (body < 12) return ProxyParse::Invalid;
    inet_ntop(AF_INET, addr, text, sizeof text);
    out.source_port = static_cast<uint16_t>((addr[8] << 8) | addr[9]);
  } else if (family == 2) {  // AF_INET6: src 16, dst 16, sport 2, dport 2
    if (body < 36) return ProxyParse::Invalid;
    inet_ntop(AF_INET6, addr, text, sizeof text);
    out.source_port = static_cast<uint16_t>((addr[32] << 8) | addr[33]);
  } else if (family == 0 || family == 3) {
    return ProxyParse::Done;  // UNSPEC, or a UNIX socket: no IP address to use
  } else {
    return ProxyParse::Invalid;
  }
  out.source = text;
  return ProxyParse::Done;
}

}  // namespace

ProxyParse parseProxyHeader(const char* data, size_t len, ProxyHeader& out, size_t& consumed) {
  consumed = 0;
  // Decide the version from as many bytes as there are; a prefix of either is NeedMore.
  size_t v2 = len < sizeof kV2Signature ? len : sizeof kV2Signature;
  if (std::memcmp(data, kV2Signature, v2) == 0) {
    return v2 < sizeof kV2Signature ? ProxyParse::NeedMore : parseV2(data, len, out, consumed);
  }
  size_t v1 = len < kV1Prefix.size() ? len : kV1Prefix.size();
  if (std::memcmp(data, kV1Prefix.data(), v1) == 0) {
    return v1 < kV1Prefix.size() ? ProxyParse::NeedMore : parseV1(data, len, out, consumed);
  }
  return ProxyParse::Invalid;
}

}  // namespace cutover
