// Scalar parsers shared by the loader and the filters' own checks, plus the small Config/Error
// members. Strict on purpose: a config value either means exactly one thing or is rejected.
#include <arpa/inet.h>

#include <cstring>
#include <limits>

#include "config/loader.h"

namespace cutover::config {

namespace {

// Digits only (no sign, no spaces); false on empty input or overflow past `max`.
bool parseDigits(std::string_view text, uint64_t max, uint64_t& out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (max - digit) / 10) return false;
    value = value * 10 + digit;
  }
  out = value;
  return true;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

}  // namespace

bool parseDuration(const std::string& text, Duration& out) {
  std::string_view view(text);
  size_t digits = 0;
  while (digits < view.size() && view[digits] >= '0' && view[digits] <= '9') ++digits;
  std::string_view unit = view.substr(digits);
  int64_t multiplier = 0;
  if (unit == "ms") {
    multiplier = 1;
  } else if (unit == "s") {
    multiplier = 1000;
  } else if (unit == "m") {
    multiplier = 60 * 1000;
  } else if (unit == "h") {
    multiplier = 3600 * 1000;
  } else {
    return false;
  }
  uint64_t value = 0;
  // Bounded so that value * multiplier fits comfortably in milliseconds as int64.
  const uint64_t max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / multiplier);
  if (!parseDigits(view.substr(0, digits), max, value)) return false;
  out = Duration(static_cast<int64_t>(value) * multiplier);
  return true;
}

bool parseRate(const std::string& text, uint32_t& count, Duration& per) {
  size_t slash = text.find('/');
  if (slash == std::string::npos) return false;
  std::string_view view(text);
  uint64_t value = 0;
  if (!parseDigits(view.substr(0, slash), std::numeric_limits<uint32_t>::max(), value)) {
    return false;
  }
  if (value == 0) return false;  // "0/s" limits nothing sensible: reject rather than guess
  std::string_view unit = view.substr(slash + 1);
  Duration period;
  if (unit == "s" || unit == "sec" || unit == "second") {
    period = std::chrono::seconds(1);
  } else if (unit == "m" || unit == "min" || unit == "minute") {
    period = std::chrono::minutes(1);
  } else if (unit == "h" || unit == "hr" || unit == "hour") {
    period = std::chrono::hours(1);
  } else {
    return false;
  }
  count = static_cast<uint32_t>(value);
  per = period;
  return true;
}

bool isLoopbackAddress(const SocketAddress& address) {
  if (address.addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&address.addr);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (address.addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&address.addr);
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
  }
  return false;
}

bool parseSocketAddress(const std::string& text, SocketAddress& out) {
  std::string host;
  std::string_view port_text;
  bool v6 = false;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find("]:");
    if (close == std::string::npos) return false;
    host = text.substr(1, close - 1);
    port_text = std::string_view(text).substr(close + 2);
    v6 = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    port_text = std::string_view(text).substr(colon + 1);
    if (host.find(':') != std::string::npos) return false;  // bare IPv6 needs brackets
    if (equalsIgnoreCase(host, "localhost")) host = "127.0.0.1";
  }
  uint64_t port = 0;
  if (port_text.size() > 5 || !parseDigits(port_text, 65535, port)) return false;

  SocketAddress result;
  char buffer[INET6_ADDRSTRLEN] = {};
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &sa.sin6_addr) != 1) return false;
    inet_ntop(AF_INET6, &sa.sin6_addr, buffer, sizeof(buffer));
    std::memcpy(&result.addr, &sa, sizeof(sa));
    result.len = sizeof(sa);
    result.text = '[';
    result.text += buffer;
    result.text += "]:";
    result.text += std::to_string(port);
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return false;
    inet_ntop(AF_INET, &sa.sin_addr, buffer, sizeof(buffer));
    std::memcpy(&result.addr, &sa, sizeof(sa));
    result.len = sizeof(sa);
    result.text = buffer;
    result.text += ':';
    result.text += std::to_string(port);
  }
  out = result;
  return true;
}

bool parseDnsName(const std::string& text, DnsName& out) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string_view host = std::string_view(text).substr(0, colon);
  std::string_view port_text = std::string_view(text).substr(colon + 1);
  uint64_t port = 0;
  if (port_text.size() > 5 || !parseDigits(port_text, 65535, port) || port == 0) return false;
  // RFC 1123: dot-separated labels of 1..63 letters, digits and '-', not starting or ending with
  // '-'; at most 253 characters without the optional trailing dot (a fully qualified name).
  std::string_view name = host.back() == '.' ? host.substr(0, host.size() - 1) : host;
  if (name.empty() || name.size() > 253) return false;
  std::string_view last_label;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) return false;
    }
    last_label = label;
    start = dot + 1;
  }
  // An all-digit last label is a mistyped IPv4 address ("10.0.0.300"), not a name.
  bool digits = true;
  for (char c : last_label) digits = digits && c >= '0' && c <= '9';
  if (digits) return false;
  DnsName result;
  result.host = std::string(host);
  result.port = static_cast<uint16_t>(port);
  result.text = text;
  out = std::move(result);
  return true;
}

std::string Error::str() const {
  // Appended piece by piece: g++ 12 -O2 warns (-Wrestrict, a false positive) on "x" + string.
  std::string out = file;
  if (line > 0) {
    out += ':';
    out += std::to_string(line);
    out += ':';
    out += std::to_string(column);
  }
  out += ": ";
  if (!path.empty()) {
    out += path;
    out += ": ";
  }
  out += message;
  return out;
}

int Config::backendIndex(const std::string& name) const {
  for (size_t i = 0; i < backends.size(); ++i) {
    if (backends[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace cutover::config
