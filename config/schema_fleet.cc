// The `fleet:` section: Redis address, AUTH source, key prefix, per-command timeout, replica id.
#include <algorithm>
#include <cstdlib>

#include "config/schema.h"

namespace cutover::config::detail {

namespace {

bool isEnvVarName(const std::string& text) {
  if (text.empty() || (text[0] >= '0' && text[0] <= '9')) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// "host:port" or "[v6]:port"; host is letters, digits, '.', '-', ':' (inside brackets).
bool parseHostPort(const std::string& text, std::string& host, uint16_t& port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size()) return false;
  std::string h = text.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  }
  if (h.size() > 253) return false;
  for (char c : h) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '-' || c == ':')) {
      return false;
    }
  }
  const std::string p = text.substr(colon + 1);
  if (p.size() > 5 || !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const long v = std::strtol(p.c_str(), nullptr, 10);
  if (v < 1 || v > 65535) return false;
  host = h;
  port = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

void Loader::loadFleet(const MapReader& top) {
  if (!top.has("fleet")) return;
  MapReader map(errors_, top.value("fleet"), "fleet",
                {"redis", "password_env", "key_prefix", "timeout", "replica_id"});
  if (!map.ok()) return;
  Fleet f;
  f.enabled = true;
  std::string addr;
  if (map.require("redis") && map.getString("redis", addr) &&
      !parseHostPort(addr, f.host, f.port)) {
    errors_.add(map.value("redis"), map.path("redis"),
                "expected host:port (e.g. 127.0.0.1:6379 or redis:6379), got " + quoted(addr));
  }
  if (map.getString("password_env", f.password_env) && !f.password_env.empty()) {
    if (!isEnvVarName(f.password_env)) {
      errors_.add(map.value("password_env"), map.path("password_env"),
                  "expected an environment variable name, got " + quoted(f.password_env));
    } else if (const char* v = std::getenv(f.password_env.c_str()); v == nullptr || *v == '\0') {
      // Never fall back to an unauthenticated connection when a password is configured.
      errors_.add(map.value("password_env"), map.path("password_env"),
                  "environment variable " + f.password_env + " is not set or empty");
    } else {
      f.password = v;
    }
  }
  if (map.getString("key_prefix", f.key_prefix)) {
    const bool printable = std::all_of(f.key_prefix.begin(), f.key_prefix.end(),
                                       [](char c) { return c > ' ' && c < 127; });
    if (f.key_prefix.empty() || f.key_prefix.size() > 200 || !printable) {
      errors_.add(
          map.value("key_prefix"), map.path("key_prefix"),
          "expected 1..200 printable characters without spaces, got " + quoted(f.key_prefix));
    }
  }
  map.getDuration("timeout", std::chrono::milliseconds(1), std::chrono::seconds(10), f.timeout);
  if (map.getString("replica_id", f.replica_id) && !f.replica_id.empty() && !isName(f.replica_id)) {
    errors_.add(map.value("replica_id"), map.path("replica_id"),
                "must be 1..64 letters, digits, '_', '-' or '.', got " + quoted(f.replica_id));
  }
  config_.fleet = std::move(f);
}

}  // namespace cutover::config::detail
