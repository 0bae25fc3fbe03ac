// Routes: match, the precomputed split, stickiness, fallback, retry policy and per-route limits.
#include <algorithm>

#include "common/path_normalize.h"
#include "config/schema.h"

namespace cutover::config::detail {

using std::chrono::hours;

void Loader::loadMatch(const YAML::Node& node, const std::string& path, RouteMatch& out) {
  MapReader map(errors_, node, path, {"prefix", "exact", "header", "case_sensitive"});
  if (!map.ok()) return;
  if (map.has("prefix") == map.has("exact")) {
    errors_.add(node, path, "needs exactly one of 'prefix' or 'exact'");
  } else {
    const std::string key = map.has("prefix") ? "prefix" : "exact";
    out.kind = map.has("prefix") ? RouteMatch::Kind::Prefix : RouteMatch::Kind::Exact;
    if (map.getString(key, out.path)) {
      if (!isPath(out.path)) {
        errors_.add(map.value(key), map.path(key),
                    "expected a path starting with '/' without spaces, got " + quoted(out.path));
      } else {
        checkNormalPath(map.value(key), map.path(key), out);
      }
    }
  }
  if (map.has("header")) {
    MapReader header(errors_, map.value("header"), map.path("header"), {"name", "value"});
    if (header.ok() && header.require("name")) {
      readHeaderName(header.value("name"), header.path("name"), out.header);
    }
    header.getString("value", out.header_value);
  }
  map.getBool("case_sensitive", out.case_sensitive);
}

void Loader::checkNormalPath(const YAML::Node& at, const std::string& path, const RouteMatch& m) {
  std::string normal = m.path;
  PathStatus status = normalizePath(normal, config_.http);
  if (status == PathStatus::Unchanged) return;
  if (m.kind == RouteMatch::Kind::Prefix) {
    // A prefix may end inside a segment or an escape that requests carry in full: "/a/." matches
    // "/a/.well-known", "/a%2" matches "/a%2F" when escaped slashes are kept.
    size_t n = m.path.size();
    if (m.path[n - 1] == '%' || (n >= 2 && m.path[n - 2] == '%')) return;
    std::string longer = m.path + "x";
    if (normalizePath(longer, config_.http) != PathStatus::Invalid && longer.starts_with(m.path)) {
      return;
    }
  }
  if (status == PathStatus::Invalid) {
    errors_.add(at, path,
                "requests with this path are answered 400 (a malformed escape, %00, or an encoded "
                "slash under http.escaped_slashes: reject), so the route never matches");
    return;
  }
  std::string message = "requests are normalised before routing (see the http section), so no ";
  message += "request matches " + quoted(m.path) + "; normalised it reads " + quoted(normal);
  errors_.add(at, path, std::move(message));
}

void Loader::loadSplit(const YAML::Node& node, const std::string& path, Route& route) {
  if (!node.IsMap() || node.size() == 0) {
    errors_.add(
        node, path,
        "expected a map of backend: weight (e.g. {new: 10, legacy: 90}), got " + describe(node));
    return;
  }
  size_t before = errors_.count();
  std::vector<std::pair<std::string, SplitEntry>> entries;
  bool weights_ok = true;
  uint32_t sum = 0;
  for (auto it = node.begin(); it != node.end(); ++it) {
    YAML::Node key = it->first;
    YAML::Node value = it->second;
    if (!key.IsScalar()) {
      errors_.add(key, path, "expected a backend name, got " + describe(key));
      continue;
    }
    const std::string& name = key.Scalar();
    std::string entry_path = joinPath(path, name);
    bool duplicate = std::any_of(entries.begin(), entries.end(),
                                 [&](const auto& entry) { return entry.first == name; });
    if (duplicate) {
      errors_.add(key, path, "duplicate key " + quoted(name));
      continue;
    }
    int index = resolveBackend(key, entry_path, name);
    uint32_t weight = 0;
    if (!readUint32(errors_, value, entry_path, 0, 100, weight)) {
      weights_ok = false;
      continue;
    }
    sum += weight;
    entries.emplace_back(name, SplitEntry{static_cast<uint32_t>(std::max(index, 0)), weight});
  }
  if (weights_ok && sum != 100) {
    errors_.add(node, path, "weights must sum to 100, got " + std::to_string(sum));
  }
  if (errors_.count() != before) return;
  // `new` owns the low buckets, so raising its weight only moves keys from the others to it.
  std::stable_partition(entries.begin(), entries.end(),
                        [](const auto& entry) { return entry.first == "new"; });
  uint32_t cumulative = 0;
  for (const auto& [name, entry] : entries) {
    cumulative += entry.weight;
    route.split.push_back(entry);
    route.thresholds.push_back(cumulative * 100);
  }
}

void Loader::loadSticky(const YAML::Node& node, const std::string& path, Sticky& out) {
  MapReader map(errors_, node, path,
                {"cookie", "header", "client_ip", "insert", "max_age", "secure"});
  if (!map.ok()) return;
  int kinds = map.has("cookie") + map.has("header") + map.has("client_ip");
  if (kinds != 1) {
    errors_.add(node, path, "needs exactly one of 'cookie', 'header' or 'client_ip'");
    return;
  }
  if (map.has("cookie")) {
    std::string name;
    if (!map.getString("cookie", name)) return;
    if (!isToken(name)) {
      errors_.add(map.value("cookie"), map.path("cookie"),
                  "expected a cookie name, got " + quoted(name));
      return;
    }
    out.kind = Sticky::Kind::Cookie;
    out.name = name;
    map.getBool("insert", out.insert);
    map.getDuration("max_age", Duration(std::chrono::seconds(1)),
                    Duration(std::chrono::hours(24 * 400)), out.max_age);
    map.getBool("secure", out.secure);
    return;
  }
  for (const char* key : {"insert", "max_age", "secure"}) {
    if (map.has(key)) {
      errors_.add(map.value(key), map.path(key), "applies to a sticky cookie only");
    }
  }
  if (map.has("header")) {
    if (readHeaderName(map.value("header"), map.path("header"), out.name)) {
      out.kind = Sticky::Kind::Header;
    }
  } else {
    bool on = false;
    if (map.getBool("client_ip", on) && on) out.kind = Sticky::Kind::ClientIp;
  }
}

void Loader::loadRetry(const YAML::Node& node, const std::string& path, Retry& out) {
  MapReader map(errors_, node, path,
                {"enabled", "attempts", "on", "idempotent_only", "backoff_base", "backoff_max",
                 "retry_on_other_backend", "budget_ratio", "budget_min"},
                true);
  if (!map.ok()) return;
  Retry retry;
  retry.enabled = true;  // the section's presence turns it on
  map.getBool("enabled", retry.enabled);
  map.getUint32("attempts", 1, 10, retry.attempts);
  if (map.has("on")) {
    Conditions conditions;
    if (loadConditions(map.value("on"), map.path("on"), true, conditions)) {
      retry.on_connect_error = conditions.connect_error;
      retry.on_reset = conditions.reset;
      retry.on_timeout = conditions.timeout;
      retry.on_status = std::move(conditions.codes);
    }
  }
  map.getBool("idempotent_only", retry.idempotent_only);
  map.getDuration("backoff_base", kMinDuration, hours(1), retry.backoff_base);
  if (map.getDuration("backoff_max", kMinDuration, hours(1), retry.backoff_max) &&
      retry.backoff_max < retry.backoff_base) {
    errors_.add(map.value("backoff_max"), map.path("backoff_max"),
                "must be at least backoff_base (" + formatDuration(retry.backoff_base) + "), got " +
                    formatDuration(retry.backoff_max));
  } else if (!map.has("backoff_max") && retry.backoff_max < retry.backoff_base) {
    retry.backoff_max = retry.backoff_base;
  }
  map.getBool("retry_on_other_backend", retry.retry_on_other_backend);
  map.getDouble("budget_ratio", 0.0, 1.0, retry.budget_ratio);
  map.getUint32("budget_min", 0, kMaxCount, retry.budget_min);
  out = std::move(retry);
}

void Loader::loadRoute(const YAML::Node& node, const std::string& path, Route& route) {
  MapReader map(
      errors_, node, path,
      {"name", "match", "split", "sticky", "fallback", "timeout", "retry", "rate_limit", "stable"});
  if (!map.ok()) return;
  if (map.require("name") && map.getString("name", route.name)) {
    if (!isName(route.name)) {
      errors_.add(map.value("name"), map.path("name"),
                  "must be 1..64 letters, digits, '_', '-' or '.', got " + quoted(route.name));
    } else if (!route_names_.insert(route.name).second) {
      errors_.add(map.value("name"), map.path("name"),
                  "duplicate route name " + quoted(route.name));
    }
  }
  if (map.require("match")) loadMatch(map.value("match"), map.path("match"), route.match);
  if (map.require("split")) loadSplit(map.value("split"), map.path("split"), route);
  if (map.has("sticky")) loadSticky(map.value("sticky"), map.path("sticky"), route.sticky);
  std::string fallback;
  if (map.getString("fallback", fallback)) {
    int index = resolveBackend(map.value("fallback"), map.path("fallback"), fallback);
    if (index >= 0) route.fallback = static_cast<uint32_t>(index);
  }
  std::string stable;
  if (map.getString("stable", stable)) {
    int index = resolveBackend(map.value("stable"), map.path("stable"), stable);
    if (index >= 0) route.stable = static_cast<uint32_t>(index);
  } else if (!map.has("stable")) {
    resolveStable(node, path, route);
  }
  Duration timeout{};
  if (map.getDuration("timeout", kMinDuration, kMaxDuration, timeout)) {
    route.request_timeout = timeout;
  }
  if (map.has("retry")) loadRetry(map.value("retry"), map.path("retry"), route.retry);
  if (map.has("rate_limit")) {
    RateLimit limit;
    if (loadRateLimit(map.value("rate_limit"), map.path("rate_limit"), limit)) {
      route.rate_limit = limit;
    }
    rate_limits_.emplace_back(map.value("rate_limit"), map.path("rate_limit"));
  }
}

void Loader::loadDefaults(const MapReader& top) {
  if (!top.has("defaults")) return;
  MapReader map(errors_, top.value("defaults"), "defaults", {"stable"}, true);
  if (!map.ok()) return;
  std::string stable;
  if (map.getString("stable", stable)) {
    int index = resolveBackend(map.value("stable"), map.path("stable"), stable);
    if (index >= 0) config_.default_stable = static_cast<uint32_t>(index);
  }
}

void Loader::resolveStable(const YAML::Node& node, const std::string& path, Route& route) {
  if (config_.default_stable) {
    route.stable = config_.default_stable;
    return;
  }
  auto legacy = backend_index_.find("legacy");
  if (legacy != backend_index_.end()) {
    route.stable = static_cast<uint32_t>(legacy->second);
    return;
  }
  // Only a split that was read whole can be judged (its own errors are already reported).
  if (route.split.size() < 2 || !backends_known_) return;
  std::vector<std::string> names;
  for (const SplitEntry& entry : route.split) names.push_back(config_.backends[entry.backend].name);
  errors_.add(node, joinPath(path, "stable"),
              "route splits over " + joinNames(names) +
                  " but has no rollback target: set 'stable: <backend>' on the route or "
                  "'defaults: {stable: <backend>}' (a backend named 'legacy' is the default)");
}

void Loader::loadRoutes(const MapReader& top) {
  if (!top.require("routes")) return;
  const YAML::Node& list = top.value("routes");
  if (!list.IsSequence() || list.size() == 0) {
    errors_.add(list, "routes", "expected a sequence of at least one route, got " + describe(list));
    return;
  }
  config_.routes.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    Route route;
    loadRoute(list[i], indexPath("routes", i), route);
    config_.routes.push_back(std::move(route));
  }
}

}  // namespace cutover::config::detail
