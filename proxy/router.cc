#include "proxy/router.h"

#include <chrono>

#include "config/route_table.h"

namespace cutover {

namespace {

bool headerMatches(const config::RouteMatch& m, const RequestHead& req) {
  if (m.header.empty()) return true;
  if (!req.headers.has(m.header)) return false;
  return m.header_value.empty() || req.headers.get(m.header) == m.header_value;
}

bool pathMatches(const config::RouteMatch& m, std::string_view path) {
  if (m.kind == config::RouteMatch::Kind::Exact) {
    return m.case_sensitive ? path == m.path : iequals(path, m.path);
  }
  if (path.size() < m.path.size()) return false;
  std::string_view head = path.substr(0, m.path.size());
  return m.case_sensitive ? head == m.path : iequals(head, m.path);
}

}  // namespace

int matchRoute(const config::Config& cfg, const RequestHead& req) {
  const config::RouteTable* table = cfg.route_table.get();
  if (table == nullptr || table->routeCount() != cfg.routes.size())
    return matchRouteLinear(cfg, req);
  return table->match(req.path(),
                      [&](uint32_t i) { return headerMatches(cfg.routes[i].match, req); });
}

int matchRouteLinear(const config::Config& cfg, const RequestHead& req) {
  std::string_view path = req.path();
  for (size_t i = 0; i < cfg.routes.size(); ++i) {
    const config::RouteMatch& m = cfg.routes[i].match;
    if (pathMatches(m, path) && headerMatches(m, req)) return static_cast<int>(i);
  }
  return -1;
}

uint32_t stickyBucket(std::string_view key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  // Fold the high bits in: FNV's low bits alone are weak for short keys.
  h ^= h >> 32;
  return static_cast<uint32_t>(h % 10000);
}

std::string stickyCookie(const config::Sticky& sticky, std::string_view key,
                         std::string_view proto) {
  std::string out;
  out.reserve(sticky.name.size() + key.size() + 64);
  out.append(sticky.name).append("=").append(key).append("; Path=/; Max-Age=");
  out.append(
      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(sticky.max_age).count()));
  out.append("; HttpOnly; SameSite=Lax");
  if (sticky.secure || proto == "https") out.append("; Secure");
  return out;
}

uint32_t pickSplit(const config::Route& route, uint32_t bucket) {
  for (size_t i = 0; i < route.thresholds.size(); ++i) {
    if (bucket < route.thresholds[i]) return static_cast<uint32_t>(i);
  }
  return route.thresholds.empty() ? 0 : static_cast<uint32_t>(route.thresholds.size() - 1);
}

std::string_view findCookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view item = header.substr(0, semi);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    size_t eq = item.find('=');
    if (eq != std::string_view::npos && item.substr(0, eq) == name) {
      std::string_view v = item.substr(eq + 1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return {};
}

std::string_view stickyKey(const config::Route& route, const RequestHead& req,
                           std::string_view client_ip) {
  switch (route.sticky.kind) {
    case config::Sticky::Kind::None:
      return {};
    case config::Sticky::Kind::Cookie:
      for (size_t i = 0; i < req.headers.size(); ++i) {
        if (req.headers.removed(i) || !iequals(req.headers.name(i), "cookie")) continue;
        std::string_view v = findCookie(req.headers.value(i), route.sticky.name);
        if (!v.empty()) return v;
      }
      return {};
    case config::Sticky::Kind::Header:
      return req.headers.get(route.sticky.name);
    case config::Sticky::Kind::ClientIp:
      return client_ip;
  }
  return {};
}

}  // namespace cutover
