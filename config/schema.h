// The schema reader behind loadString (internal to config/): one Loader per load, one method per
// section, split over loader.cc (top level, listeners, filters, admin, logs), schema_backends.cc
// and schema_routes.cc. Every method reports problems into Errors and carries on.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/yaml_util.h"

namespace cutover::config::detail {

constexpr Duration kMinDuration = std::chrono::milliseconds(1);
constexpr Duration kMaxDuration = std::chrono::hours(24);
constexpr uint32_t kMaxCount = 10'000'000;  // generic upper bound for counts and table sizes

// The outcomes a breaker counts as failures or a retry policy retries on.
struct Conditions {
  bool connect_error = false;
  bool timeout = false;
  bool reset = false;
  bool status_5xx = false;
  std::vector<uint16_t> codes;
};

class Loader {
 public:
  Loader(Errors& errors, Config& config) : errors_(errors), config_(config) {}

  void load(const YAML::Node& root);

 private:
  void loadListeners(const MapReader& top);
  void loadListenerTls(const YAML::Node& node, const std::string& path, ListenerTls& out);
  void loadWorkers(const MapReader& top);
  void loadTimeouts(const MapReader& top);
  void loadLimits(const MapReader& top);
  void loadOverrideHeader(const MapReader& top);
  void loadHttp(const MapReader& top);
  void loadFilters(const MapReader& top);
  bool loadRateLimit(const YAML::Node& node, const std::string& path, RateLimit& out);
  void loadBackends(const MapReader& top);
  void loadBackend(const YAML::Node& node, const std::string& path, Backend& backend);
  void loadBackendTls(const YAML::Node& node, const std::string& path, BackendTls& out);
  // One item of backends.X.endpoints: a numeric address, or a DNS name (never resolved here).
  void loadEndpoint(const YAML::Node& node, const std::string& path, Backend& backend);
  void loadCircuitBreaker(const YAML::Node& node, const std::string& path, CircuitBreaker& out);
  void loadHealthCheck(const YAML::Node& node, const std::string& path, HealthCheck& out);
  void loadRoutes(const MapReader& top);
  void loadRoute(const YAML::Node& node, const std::string& path, Route& route);
  void loadMatch(const YAML::Node& node, const std::string& path, RouteMatch& out);
  // Reports a match path that no request can have once normalised (config.http).
  void checkNormalPath(const YAML::Node& at, const std::string& path, const RouteMatch& m);
  void loadSplit(const YAML::Node& node, const std::string& path, Route& route);
  void loadSticky(const YAML::Node& node, const std::string& path, Sticky& out);
  void loadRetry(const YAML::Node& node, const std::string& path, Retry& out);
  void loadDefaults(const MapReader& top);
  // Resolves route.stable (explicit, defaults.stable, or "legacy"); refuses a split without one.
  void resolveStable(const YAML::Node& node, const std::string& path, Route& route);
  void loadAdmin(const MapReader& top);
  void loadAdminToken(const MapReader& map, bool env_ok);
  void loadAccessLog(const MapReader& top);
  void loadFleet(const MapReader& top);  // schema_fleet.cc
  bool loadConditions(const YAML::Node& node, const std::string& path, bool for_retry,
                      Conditions& out);
  // Backend index for a name, reporting an unknown one; -1 when unknown or not checkable.
  int resolveBackend(const YAML::Node& at, const std::string& path, const std::string& name);
  // Lower-case header name, or an error.
  bool readHeaderName(const YAML::Node& node, const std::string& path, std::string& out);

  Errors& errors_;
  Config& config_;
  bool backends_known_ = false;  // backends parsed as a map: names can be checked
  bool rate_limit_filter_ = true;
  std::vector<std::pair<YAML::Node, std::string>> rate_limits_;  // where limits are configured
  // Name lookups stay O(1) so a config with 100k routes checks in linear time.
  std::unordered_map<std::string, int> backend_index_;
  std::unordered_set<std::string> route_names_;
};

}  // namespace cutover::config::detail
