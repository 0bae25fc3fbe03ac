#include "common/client_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/http_message.h"

namespace cutover {

bool parseIp(std::string_view text, IpAddress& out) {
  char buf[64];
  if (text.empty() || text.size() >= sizeof buf) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  if (inet_pton(AF_INET, buf, a.bytes.data()) == 1) {
    a.family = 4;
  } else if (inet_pton(AF_INET6, buf, a.bytes.data()) == 1) {
    a.family = 6;
  } else {
    return false;
  }
  out = a;
  return true;
}

namespace {

// True when the bits of `a` and `b` agree over the first `prefix` bits.
bool samePrefix(const IpAddress& a, const IpAddress& b, unsigned prefix) {
  unsigned whole = prefix / 8;
  if (std::memcmp(a.bytes.data(), b.bytes.data(), whole) != 0) return false;
  unsigned rest = prefix % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.bytes[whole] & mask) == (b.bytes[whole] & mask);
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries.
IpAddress unmapped(const IpAddress& a) {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (a.family != 6 || std::memcmp(a.bytes.data(), kMapped, 12) != 0) return a;
  IpAddress v4;
  v4.family = 4;
  std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
  return v4;
}

}  // namespace

bool Cidr::contains(const IpAddress& raw) const {
  IpAddress a = unmapped(raw);
  return a.family == base.family && samePrefix(a, base, prefix);
}

bool parseCidr(std::string_view text, Cidr& out) {
  size_t slash = text.find('/');
  Cidr c;
  if (!parseIp(text.substr(0, slash), c.base)) return false;
  unsigned max = c.base.family == 4 ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return false;
    prefix = 0;
    for (char ch : digits) {
      if (ch < '0' || ch > '9') return false;
      prefix = prefix * 10 + static_cast<unsigned>(ch - '0');
    }
    if (prefix > max) return false;
  }
  // An IPv4-mapped IPv6 range (::ffff:10.0.0.0/104) is the IPv4 range it maps: peers are
  // compared as IPv4 (Cidr::contains unmaps them).
  if (c.base.family == 6 && prefix >= 96 && unmapped(c.base).family == 4) {
    c.base = unmapped(c.base);
    prefix -= 96;
  }
  c.prefix = static_cast<uint8_t>(prefix);
  IpAddress masked{};
  masked.family = c.base.family;
  for (unsigned i = 0; i < prefix / 8; ++i) masked.bytes[i] = c.base.bytes[i];
  if (prefix % 8 != 0) {
    masked.bytes[prefix / 8] =
        static_cast<uint8_t>(c.base.bytes[prefix / 8] & (0xff << (8 - prefix % 8)));
  }
  if (masked.bytes != c.base.bytes) return false;  // host bits set
  out = c;
  return true;
}

std::string formatCidr(const Cidr& c) {
  char buf[INET6_ADDRSTRLEN] = {0};
  inet_ntop(c.base.family == 4 ? AF_INET : AF_INET6, c.base.bytes.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(c.prefix);
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Walks the X-Forwarded-For entries from the right (the last header line's last entry first),
// calling `visit(entry)` until it returns false. Without allocating: lines are few, so each step
// back to an earlier line scans for it again.
template <typename Visit>
void forEachXffFromRight(const HeaderMap& h, Visit visit) {
  size_t line = h.size();
  while (line > 0) {
    --line;
    if (h.removed(line) || !tokenIs(h.name(line), "x-forwarded-for")) continue;
    std::string_view v = h.value(line);
    while (true) {
      size_t comma = v.rfind(',');
      std::string_view entry = trim(comma == std::string_view::npos ? v : v.substr(comma + 1));
      if (!visit(entry)) return;
      if (comma == std::string_view::npos) break;
      v = v.substr(0, comma);
    }
  }
}

bool trustedByCidr(const TrustedProxies& t, const IpAddress& a) {
  for (const Cidr& c : t.cidrs) {
    if (c.contains(a)) return true;
  }
  return false;
}

}  // namespace

ClientAddress resolveClientAddress(std::string_view peer, const HeaderMap& headers,
                                   const TrustedProxies& trusted) {
  ClientAddress out;
  out.address = peer;
  if (!trusted.enabled()) return out;
  if (!trusted.cidrs.empty()) {
    IpAddress p;
    if (!parseIp(peer, p) || !trustedByCidr(trusted, p)) return out;
    out.peer_trusted = true;
    // Right to left past trusted proxies; the first untrusted entry is the client. If every
    // entry is trusted, the leftmost is the best there is (nginx does the same).
    bool bad = false;
    std::string_view found;
    forEachXffFromRight(headers, [&](std::string_view entry) {
      IpAddress a;
      if (!parseIp(entry, a)) {
        bad = true;
        return false;
      }
      found = entry;
      return trustedByCidr(trusted, a);
    });
    if (!bad && !found.empty()) {
      out.address = found;
      out.from_xff = true;
    }
    return out;
  }
  // Hops: the peer is the last trusted proxy; the client is the hops-th entry from the right.
  // With fewer entries than trusted hops the request did not come through them: nothing of it is
  // trusted (not even its X-Forwarded-Proto).
  uint32_t seen = 0;
  std::string_view found;
  forEachXffFromRight(headers, [&](std::string_view entry) {
    if (++seen < trusted.hops) return true;
    found = entry;
    return false;
  });
  IpAddress a;
  if (!found.empty() && parseIp(found, a)) {
    out.address = found;
    out.from_xff = true;
    out.peer_trusted = true;
  }
  return out;
}

}  // namespace cutover
