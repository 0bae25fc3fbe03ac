// Backends and the policies attached to them: endpoints, pool, circuit breaker, health check and
// the rate-limit shape shared with routes and the chain default.
#include <algorithm>

#include "config/schema.h"

namespace cutover::config::detail {

using std::chrono::hours;

bool Loader::loadRateLimit(const YAML::Node& node, const std::string& path, RateLimit& out) {
  MapReader map(errors_, node, path,
                {"rate", "burst", "key", "mode", "response_headers", "max_keys"});
  if (!map.ok()) return false;
  size_t before = errors_.count();
  RateLimit limit;
  if (map.require("rate")) {
    std::string text;
    if (map.getString("rate", text) && !parseRate(text, limit.rate, limit.per)) {
      errors_.add(
          map.value("rate"), map.path("rate"),
          "expected a rate like 10/s, 5/min or 100/h (count at least 1), got " + quoted(text));
    }
  }
  limit.burst = limit.rate;
  map.getUint32("burst", 1, kMaxCount, limit.burst);
  if (map.has("key")) {
    const YAML::Node& key = map.value("key");
    if (key.IsMap()) {
      MapReader header(errors_, key, map.path("key"), {"header"});
      if (header.require("header")) {
        if (readHeaderName(header.value("header"), header.path("header"), limit.header)) {
          limit.key = RateLimit::Key::Header;
        }
      }
    } else if (key.IsScalar() && key.Scalar() == "client_ip") {
      limit.key = RateLimit::Key::ClientIp;
    } else if (key.IsScalar() && key.Scalar() == "route") {
      limit.key = RateLimit::Key::Route;
    } else if (key.IsScalar() && key.Scalar() == "client_cert") {
      limit.key = RateLimit::Key::ClientCert;
    } else {
      errors_.add(key, map.path("key"),
                  "expected client_ip, route, client_cert or {header: NAME}, got " + describe(key));
    }
  }
  if (map.has("mode")) {
    std::string mode;
    if (map.getString("mode", mode)) {
      if (mode == "enforce") {
        limit.mode = RateLimit::Mode::Enforce;
      } else if (mode == "dry_run") {
        limit.mode = RateLimit::Mode::DryRun;
      } else {
        errors_.add(map.value("mode"), map.path("mode"),
                    "expected enforce or dry_run, got " + quoted(mode));
      }
    }
  }
  map.getBool("response_headers", limit.response_headers);
  map.getUint32("max_keys", 1, kMaxCount, limit.max_keys);
  if (errors_.count() != before) return false;
  out = limit;
  return true;
}

bool Loader::loadConditions(const YAML::Node& node, const std::string& path, bool for_retry,
                            Conditions& out) {
  const char* expected = for_retry ? "connect_error, reset, timeout or a status code 100..599"
                                   : "connect_error, timeout, reset, 5xx or a status code 100..599";
  if (!node.IsSequence() || node.size() == 0) {
    errors_.add(
        node, path,
        std::string("expected a non-empty list of ") + expected + ", got " + describe(node));
    return false;
  }
  size_t before = errors_.count();
  Conditions result;
  std::vector<std::string> seen;
  for (size_t i = 0; i < node.size(); ++i) {
    std::string item_path = indexPath(path, i);
    std::string text;
    if (!readString(errors_, node[i], item_path, text)) continue;
    if (std::find(seen.begin(), seen.end(), text) != seen.end()) {
      errors_.add(node[i], item_path, "duplicate entry " + quoted(text));
      continue;
    }
    seen.push_back(text);
    if (text == "connect_error") {
      result.connect_error = true;
    } else if (text == "timeout") {
      result.timeout = true;
    } else if (text == "reset") {
      result.reset = true;
    } else if (text == "5xx" && !for_retry) {
      result.status_5xx = true;
    } else if (!text.empty() &&
               std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      uint32_t code = 0;
      if (!readUint32(errors_, node[i], item_path, 100, 599, code)) continue;
      if (for_retry && code == 429) {
        errors_.add(node[i], item_path,
                    "429 is never retried: the backend asked for fewer requests, not more");
        continue;
      }
      result.codes.push_back(static_cast<uint16_t>(code));
    } else {
      errors_.add(node[i], item_path,
                  std::string("expected ") + expected + ", got " + quoted(text));
    }
  }
  if (errors_.count() != before) return false;
  out = std::move(result);
  return true;
}

void Loader::loadCircuitBreaker(const YAML::Node& node, const std::string& path,
                                CircuitBreaker& out) {
  MapReader map(
      errors_, node, path,
      {"enabled", "consecutive_failures", "cooldown", "max_cooldown", "multiplier", "jitter",
       "half_open_probes", "failure_on", "max_connections", "max_pending", "max_inflight"},
      true);
  if (!map.ok()) return;
  CircuitBreaker cb;
  cb.enabled = true;  // the section's presence turns it on
  map.getBool("enabled", cb.enabled);
  map.getUint32("consecutive_failures", 1, kMaxCount, cb.consecutive_failures);
  map.getDuration("cooldown", kMinDuration, kMaxDuration, cb.cooldown);
  if (map.getDuration("max_cooldown", kMinDuration, kMaxDuration, cb.max_cooldown) &&
      cb.max_cooldown < cb.cooldown) {
    errors_.add(map.value("max_cooldown"), map.path("max_cooldown"),
                "must be at least cooldown (" + formatDuration(cb.cooldown) + "), got " +
                    formatDuration(cb.max_cooldown));
  } else if (!map.has("max_cooldown") && cb.max_cooldown < cb.cooldown) {
    cb.max_cooldown = cb.cooldown;  // a long cooldown with the default cap: never shrink it
  }
  map.getDouble("multiplier", 1.0, 100.0, cb.cooldown_multiplier);
  map.getDouble("jitter", 0.0, 1.0, cb.jitter);
  map.getUint32("half_open_probes", 1, kMaxCount, cb.half_open_probes);
  if (map.has("failure_on")) {
    Conditions conditions;
    if (loadConditions(map.value("failure_on"), map.path("failure_on"), false, conditions)) {
      cb.on_connect_error = conditions.connect_error;
      cb.on_timeout = conditions.timeout;
      cb.on_reset = conditions.reset;
      cb.on_5xx = conditions.status_5xx;
      cb.on_status = std::move(conditions.codes);
    }
  }
  map.getUint32("max_connections", 0, kMaxCount, cb.max_connections);
  map.getUint32("max_pending", 0, kMaxCount, cb.max_pending);
  map.getUint32("max_inflight", 0, kMaxCount, cb.max_inflight);
  out = std::move(cb);
}

void Loader::loadHealthCheck(const YAML::Node& node, const std::string& path, HealthCheck& out) {
  MapReader map(errors_, node, path,
                {"enabled", "path", "interval", "timeout", "healthy_threshold",
                 "unhealthy_threshold", "backoff_base", "backoff_max"},
                true);
  if (!map.ok()) return;
  HealthCheck hc;
  hc.enabled = true;
  map.getBool("enabled", hc.enabled);
  if (map.getString("path", hc.path) && !isPath(hc.path)) {
    errors_.add(map.value("path"), map.path("path"),
                "expected a path starting with '/' without spaces, got " + quoted(hc.path));
  }
  map.getDuration("interval", kMinDuration, kMaxDuration, hc.interval);
  if (map.getDuration("timeout", kMinDuration, kMaxDuration, hc.timeout) &&
      hc.timeout > hc.interval) {
    errors_.add(map.value("timeout"), map.path("timeout"),
                "must not exceed interval (" + formatDuration(hc.interval) + "), got " +
                    formatDuration(hc.timeout));
  }
  map.getUint32("healthy_threshold", 1, 1000, hc.healthy_threshold);
  map.getUint32("unhealthy_threshold", 1, 1000, hc.unhealthy_threshold);
  map.getDuration("backoff_base", kMinDuration, kMaxDuration, hc.backoff_base);
  if (map.getDuration("backoff_max", kMinDuration, kMaxDuration, hc.backoff_max) &&
      hc.backoff_max < hc.backoff_base) {
    errors_.add(map.value("backoff_max"), map.path("backoff_max"),
                "must be at least backoff_base (" + formatDuration(hc.backoff_base) + "), got " +
                    formatDuration(hc.backoff_max));
  }
  out = std::move(hc);
}

void Loader::loadBackend(const YAML::Node& node, const std::string& path, Backend& backend) {
  MapReader map(
      errors_, node, path,
      {"endpoints", "dns_refresh", "pool", "circuit_breaker", "health_check", "rate_limit", "tls"});
  if (!map.ok()) return;
  if (map.require("endpoints")) {
    const YAML::Node& list = map.value("endpoints");
    if (!list.IsSequence() || list.size() == 0) {
      errors_.add(list, map.path("endpoints"),
                  "expected a sequence of at least one address, got " + describe(list));
    } else {
      for (size_t i = 0; i < list.size(); ++i) {
        loadEndpoint(list[i], indexPath(map.path("endpoints"), i), backend);
      }
    }
  }
  // Minimum 1s: a lookup goes to the cluster DNS, and a tighter loop buys nothing.
  map.getDuration("dns_refresh", std::chrono::seconds(1), kMaxDuration, backend.dns_refresh);
  if (map.has("pool")) {
    MapReader pool(errors_, map.value("pool"), map.path("pool"),
                   {"max_idle_per_endpoint", "idle_timeout"}, true);
    pool.getUint32("max_idle_per_endpoint", 0, 100000, backend.pool.max_idle_per_endpoint);
    pool.getDuration("idle_timeout", kMinDuration, kMaxDuration, backend.pool.idle_timeout);
  }
  if (map.has("circuit_breaker")) {
    loadCircuitBreaker(map.value("circuit_breaker"), map.path("circuit_breaker"),
                       backend.circuit_breaker);
  }
  if (map.has("health_check")) {
    loadHealthCheck(map.value("health_check"), map.path("health_check"), backend.health_check);
  }
  if (map.has("rate_limit")) {
    RateLimit limit;
    if (loadRateLimit(map.value("rate_limit"), map.path("rate_limit"), limit)) {
      backend.rate_limit = limit;
    }
  }
  if (map.has("tls")) {
    backend.tls.emplace();
    loadBackendTls(map.value("tls"), map.path("tls"), *backend.tls);
  }
}

void Loader::loadBackendTls(const YAML::Node& node, const std::string& path, BackendTls& out) {
  MapReader map(errors_, node, path,
                {"sni", "ca", "verify", "client_cert", "client_key", "min_version"}, true);
  if (!map.ok()) return;
  auto pos = [](const YAML::Node& n) { return SourcePos{n.Mark().line + 1, n.Mark().column + 1}; };
  if (map.getString("sni", out.sni) && !out.sni.empty()) {
    DnsName dn;
    if (!parseDnsName(out.sni + ":1", dn)) {
      errors_.add(map.value("sni"), map.path("sni"), "must be a DNS name, got " + quoted(out.sni));
    }
  }
  if (map.getString("ca", out.ca)) out.ca_at = pos(map.value("ca"));
  map.getBool("verify", out.verify);
  if (map.getString("client_cert", out.client_cert)) {
    out.client_cert_at = pos(map.value("client_cert"));
  }
  if (map.getString("client_key", out.client_key)) out.client_key_at = pos(map.value("client_key"));
  if (out.client_cert.empty() != out.client_key.empty()) {
    const char* missing = out.client_cert.empty() ? "client_cert" : "client_key";
    errors_.add(node, map.path(missing),
                std::string("client_cert and client_key go together: ") + missing + " is missing");
  }
  map.getTlsVersion("min_version", out.min_version);
}

void Loader::loadEndpoint(const YAML::Node& node, const std::string& path, Backend& backend) {
  if (!node.IsScalar()) {
    SocketAddress ignored;
    readAddress(errors_, node, path, ignored);  // reports the type
    return;
  }
  const std::string& text = node.Scalar();
  SocketAddress address;
  DnsName name;
  if (parseSocketAddress(text, address)) {
    bool duplicate =
        std::any_of(backend.endpoints.begin(), backend.endpoints.end(),
                    [&](const SocketAddress& other) { return other.text == address.text; });
    if (duplicate) {
      errors_.add(node, path, "duplicate endpoint " + address.text);
      return;
    }
    backend.endpoints.push_back(std::move(address));
  } else if (parseDnsName(text, name)) {
    // Host names are case-insensitive: "Web:80" and "web:80" are one name.
    auto same = [&](const DnsName& other) {
      return other.port == name.port && other.host.size() == name.host.size() &&
             std::equal(other.host.begin(), other.host.end(), name.host.begin(),
                        [](char a, char b) { return (a | 0x20) == (b | 0x20); });
    };
    if (std::any_of(backend.dns.begin(), backend.dns.end(), same)) {
      errors_.add(node, path, "duplicate endpoint " + name.text);
      return;
    }
    backend.dns.push_back(std::move(name));
  } else if (text.find(':') == std::string::npos && parseDnsName(text + ":1", name)) {
    errors_.add(
        node, path,
        "a DNS name needs its port, like " + quoted(text + ":8080") + ", got " + quoted(text));
  } else {
    size_t colon = text.rfind(':');
    std::string port = colon == std::string::npos ? "" : text.substr(colon + 1);
    bool digits =
        !port.empty() && port.size() <= 10 &&
        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && std::stoull(port) > 65535) {
      errors_.add(node, path, "port must be 0..65535, got " + port);
    } else if (digits && std::stoull(port) == 0 &&
               parseDnsName(text.substr(0, colon) + ":1", name)) {
      errors_.add(node, path, "a DNS name needs a port 1..65535, got 0");
    } else {
      errors_.add(node, path,
                  "expected a numeric address like 127.0.0.1:8080 or [::1]:8080, or a DNS name "
                  "with its port like web.shop.svc.cluster.local:8080, got " +
                      quoted(text));
    }
  }
}

void Loader::loadBackends(const MapReader& top) {
  if (!top.require("backends")) return;
  const YAML::Node& map = top.value("backends");
  if (!map.IsMap() || map.size() == 0) {
    errors_.add(
        map, "backends",
        "expected a map of at least one backend (name: {endpoints: [...]}), got " + describe(map));
    return;
  }
  backends_known_ = true;
  for (auto it = map.begin(); it != map.end(); ++it) {
    YAML::Node key = it->first;
    YAML::Node value = it->second;
    if (!key.IsScalar() || !isName(key.Scalar())) {
      errors_.add(
          key, "backends",
          "backend names must be 1..64 letters, digits, '_', '-' or '.', got " + describe(key));
      continue;
    }
    const std::string& name = key.Scalar();
    if (!backend_index_.emplace(name, static_cast<int>(config_.backends.size())).second) {
      errors_.add(key, "backends", "duplicate backend " + quoted(name));
      continue;
    }
    Backend backend;
    backend.name = name;
    // Kept even when its body has errors, so routes naming it are not reported twice.
    loadBackend(value, joinPath("backends", name), backend);
    config_.backends.push_back(std::move(backend));
  }
}

int Loader::resolveBackend(const YAML::Node& at, const std::string& path, const std::string& name) {
  if (!backends_known_) return -1;
  auto found = backend_index_.find(name);
  int index = found == backend_index_.end() ? -1 : found->second;
  if (index < 0) {
    std::vector<std::string> names;
    for (const Backend& backend : config_.backends) names.push_back(backend.name);
    errors_.add(at, path,
                "unknown backend " + quoted(name) + " (backends: " + joinNames(names) + ")");
  }
  return index;
}

}  // namespace cutover::config::detail
