#include "proxy/config_diff.h"

#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace cutover {

namespace {
std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

std::string weightSignature(const config::Config& cfg) {
  std::string s;
  for (const auto& r : cfg.routes) {
    s += r.name + ":";
    for (const auto& e : r.split) {
      s += cfg.backends[e.backend].name + "=" + std::to_string(e.weight) + ",";
    }
    s += ";";
  }
  return s;
}

std::shared_ptr<const config::Config> withRollback(const config::Config& cfg) {
  auto out = std::make_shared<config::Config>(cfg);
  for (config::Route& r : out->routes) {
    if (!r.stable) continue;  // a single-backend route without a role: nothing to roll back to
    const uint32_t target = *r.stable;
    bool present = false;
    for (auto& e : r.split) {
      e.weight = e.backend == target ? 100 : 0;
      present = present || e.backend == target;
    }
    if (!present) r.split.push_back({target, 100});
    uint32_t sum = 0;
    r.thresholds.clear();
    for (const auto& e : r.split) {
      sum += e.weight;
      r.thresholds.push_back(sum * 100);
    }
  }
  return out;
}

std::vector<std::string> describeChanges(const config::Config& from, const config::Config& to) {
  std::vector<std::string> out;
  auto weightOf = [](const config::Config& c, const config::Route& r, const std::string& b) {
    for (const auto& e : r.split) {
      if (c.backends[e.backend].name == b) return static_cast<int>(e.weight);
    }
    return 0;
  };
  // Names are unique within a config: one map each way keeps a 100k-route reload linear.
  std::unordered_map<std::string_view, const config::Route*> old_routes;
  std::unordered_set<std::string_view> new_names;
  old_routes.reserve(from.routes.size());
  new_names.reserve(to.routes.size());
  for (const auto& o : from.routes) old_routes[o.name] = &o;
  for (const auto& r : to.routes) new_names.insert(r.name);
  for (const auto& r : to.routes) {
    auto found = old_routes.find(r.name);
    const config::Route* old = found == old_routes.end() ? nullptr : found->second;
    if (old == nullptr) {
      out.push_back("route " + r.name + ": added");
      continue;
    }
    auto changed = [&](bool differs, const char* what) {
      if (differs) out.push_back("route " + r.name + ": " + what + " changed");
    };
    changed(!(old->match == r.match), "match");
    changed(!(old->sticky == r.sticky), "sticky");
    changed(!(old->retry == r.retry), "retry");
    changed(!(old->rate_limit == r.rate_limit), "rate_limit");
    changed(!(old->request_timeout == r.request_timeout), "timeout");
    auto fallbackName = [](const config::Config& c, const config::Route& x) {
      return x.fallback ? c.backends[*x.fallback].name : std::string();
    };
    changed(fallbackName(from, *old) != fallbackName(to, r), "fallback");
    for (const auto& e : r.split) {
      const std::string& b = to.backends[e.backend].name;
      int before = weightOf(from, *old, b);
      if (before != static_cast<int>(e.weight)) {
        out.push_back("route " + r.name + ": " + b + " " + std::to_string(before) + "% -> " +
                      std::to_string(e.weight) + "%");
      }
    }
  }
  for (const auto& o : from.routes) {
    if (new_names.count(o.name) == 0) out.push_back("route " + o.name + ": removed");
  }
  for (const auto& b : to.backends) {
    int i = from.backendIndex(b.name);
    if (i < 0) {
      out.push_back("backend " + b.name + ": added");
      continue;
    }
    const auto& ob = from.backends[static_cast<size_t>(i)];
    std::string e1, e2;
    for (const auto& e : ob.endpoints) e1 += e.text + " ";
    for (const auto& e : b.endpoints) e2 += e.text + " ";
    for (const auto& n : ob.dns) e1 += n.text + " ";
    for (const auto& n : b.dns) e2 += n.text + " ";
    if (e1 != e2) out.push_back("backend " + b.name + ": endpoints " + trimmed(e2));
    auto changed = [&](bool differs, const char* what) {
      if (differs) out.push_back("backend " + b.name + ": " + what + " changed");
    };
    changed(!(ob.circuit_breaker == b.circuit_breaker), "circuit_breaker");
    changed(!(ob.health_check == b.health_check), "health_check");
    changed(!(ob.rate_limit == b.rate_limit), "rate_limit");
    changed(!(ob.pool == b.pool), "pool");
  }
  for (const auto& b : from.backends) {
    if (to.backendIndex(b.name) < 0) out.push_back("backend " + b.name + ": removed");
  }
  for (const auto& l : to.listeners) {
    bool found = false;
    for (const auto& o : from.listeners)
      found = found || (o.name == l.name && o.address.text == l.address.text);
    if (!found) out.push_back("listener " + l.name + ": " + l.address.text + " added");
    for (const auto& o : from.listeners) {
      if (o.name == l.name && o.proxy_protocol != l.proxy_protocol) {
        out.push_back("listener " + l.name + ": proxy_protocol " +
                      (l.proxy_protocol ? "on" : "off") + " (new connections)");
      }
    }
  }
  for (const auto& o : from.listeners) {
    bool found = false;
    for (const auto& l : to.listeners)
      found = found || (o.name == l.name && o.address.text == l.address.text);
    if (!found) out.push_back("listener " + o.name + ": " + o.address.text + " removed");
  }
  auto changed = [&](bool differs, const char* what) {
    if (differs) out.push_back(std::string(what) + " changed");
  };
  changed(!(from.limits == to.limits), "limits");
  changed(!(from.timeouts == to.timeouts), "timeouts");
  changed(!(from.rate_limit == to.rate_limit), "rate_limit (chain default)");
  changed(from.filters != to.filters, "filters");
  changed(from.override_header != to.override_header, "override_header");
  changed(from.access_log.mode != to.access_log.mode ||
              from.access_log.path != to.access_log.path ||
              from.access_log.sample != to.access_log.sample,
          "access_log");
  changed(from.metrics_enabled != to.metrics_enabled, "metrics");
  return out;
}

}  // namespace cutover
