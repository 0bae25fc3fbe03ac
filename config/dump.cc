// dumpYaml: the effective config with every default written out. The output is itself a valid
// config file that loads back to an equal Config (the unit tests check this round trip).
#include <yaml-cpp/yaml.h>

#include "config/loader.h"
#include "config/yaml_util.h"

namespace cutover::config {

namespace {

using detail::formatDouble;
using detail::formatDuration;

void emitDuration(YAML::Emitter& out, const char* key, Duration value) {
  out << YAML::Key << key << YAML::Value << formatDuration(value);
}

void emitDouble(YAML::Emitter& out, const char* key, double value) {
  out << YAML::Key << key << YAML::Value << formatDouble(value);
}

std::string formatRate(const RateLimit& limit) {
  const char* unit = "s";
  if (limit.per == std::chrono::minutes(1)) unit = "min";
  if (limit.per == std::chrono::hours(1)) unit = "h";
  return std::to_string(limit.rate) + "/" + unit;
}

void emitRateLimit(YAML::Emitter& out, const RateLimit& limit) {
  out << YAML::BeginMap;
  out << YAML::Key << "rate" << YAML::Value << formatRate(limit);
  out << YAML::Key << "burst" << YAML::Value << limit.burst;
  out << YAML::Key << "key" << YAML::Value;
  switch (limit.key) {
    case RateLimit::Key::ClientIp:
      out << "client_ip";
      break;
    case RateLimit::Key::Route:
      out << "route";
      break;
    case RateLimit::Key::ClientCert:
      out << "client_cert";
      break;
    case RateLimit::Key::Header:
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "header" << YAML::Value << limit.header
          << YAML::EndMap;
      break;
  }
  out << YAML::Key << "mode" << YAML::Value
      << (limit.mode == RateLimit::Mode::Enforce ? "enforce" : "dry_run");
  out << YAML::Key << "response_headers" << YAML::Value << limit.response_headers;
  out << YAML::Key << "max_keys" << YAML::Value << limit.max_keys;
  out << YAML::EndMap;
}

// Conditions as the loader reads them back: names first, then status codes.
void emitConditions(YAML::Emitter& out, bool connect_error, bool timeout, bool reset,
                    const bool* status_5xx, const std::vector<uint16_t>& codes) {
  out << YAML::Flow << YAML::BeginSeq;
  if (connect_error) out << "connect_error";
  if (timeout) out << "timeout";
  if (reset) out << "reset";
  if (status_5xx != nullptr && *status_5xx) out << "5xx";
  for (uint16_t code : codes) out << code;
  out << YAML::EndSeq;
}

void emitBackend(YAML::Emitter& out, const Backend& backend) {
  out << YAML::Key << backend.name << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "endpoints" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  // Names as written, never the addresses resolved from them (data-plane configs carry both).
  for (size_t e = 0; e < backend.endpoints.size(); ++e) {
    if (e < backend.endpoint_dns.size() && backend.endpoint_dns[e] >= 0) continue;
    out << backend.endpoints[e].text;
  }
  for (const DnsName& name : backend.dns) out << name.text;
  out << YAML::EndSeq;
  emitDuration(out, "dns_refresh", backend.dns_refresh);

  out << YAML::Key << "pool" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_idle_per_endpoint" << YAML::Value << backend.pool.max_idle_per_endpoint;
  emitDuration(out, "idle_timeout", backend.pool.idle_timeout);
  out << YAML::EndMap;

  const CircuitBreaker& cb = backend.circuit_breaker;
  out << YAML::Key << "circuit_breaker" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << cb.enabled;
  out << YAML::Key << "consecutive_failures" << YAML::Value << cb.consecutive_failures;
  emitDuration(out, "cooldown", cb.cooldown);
  emitDuration(out, "max_cooldown", cb.max_cooldown);
  emitDouble(out, "multiplier", cb.cooldown_multiplier);
  emitDouble(out, "jitter", cb.jitter);
  out << YAML::Key << "half_open_probes" << YAML::Value << cb.half_open_probes;
  out << YAML::Key << "failure_on" << YAML::Value;
  emitConditions(out, cb.on_connect_error, cb.on_timeout, cb.on_reset, &cb.on_5xx, cb.on_status);
  out << YAML::Key << "max_connections" << YAML::Value << cb.max_connections;
  out << YAML::Key << "max_pending" << YAML::Value << cb.max_pending;
  out << YAML::Key << "max_inflight" << YAML::Value << cb.max_inflight;
  out << YAML::EndMap;

  const HealthCheck& hc = backend.health_check;
  out << YAML::Key << "health_check" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << hc.enabled;
  out << YAML::Key << "path" << YAML::Value << hc.path;
  emitDuration(out, "interval", hc.interval);
  emitDuration(out, "timeout", hc.timeout);
  out << YAML::Key << "healthy_threshold" << YAML::Value << hc.healthy_threshold;
  out << YAML::Key << "unhealthy_threshold" << YAML::Value << hc.unhealthy_threshold;
  emitDuration(out, "backoff_base", hc.backoff_base);
  emitDuration(out, "backoff_max", hc.backoff_max);
  out << YAML::EndMap;

  if (backend.rate_limit) {
    out << YAML::Key << "rate_limit" << YAML::Value;
    emitRateLimit(out, *backend.rate_limit);
  }
  if (backend.tls) {
    const BackendTls& t = *backend.tls;
    out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    if (!t.sni.empty()) out << YAML::Key << "sni" << YAML::Value << t.sni;
    if (!t.ca.empty()) out << YAML::Key << "ca" << YAML::Value << t.ca;
    out << YAML::Key << "verify" << YAML::Value << t.verify;
    if (!t.client_cert.empty()) {
      out << YAML::Key << "client_cert" << YAML::Value << t.client_cert;
      out << YAML::Key << "client_key" << YAML::Value << t.client_key;
    }
    out << YAML::Key << "min_version" << YAML::Value << YAML::DoubleQuoted
        << (t.min_version == 13 ? "1.3" : "1.2");
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

void emitRoute(YAML::Emitter& out, const Config& config, const Route& route) {
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << route.name;
  out << YAML::Key << "match" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << (route.match.kind == RouteMatch::Kind::Prefix ? "prefix" : "exact")
      << YAML::Value << route.match.path;
  if (!route.match.header.empty()) {
    out << YAML::Key << "header" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << route.match.header;
    if (!route.match.header_value.empty()) {
      out << YAML::Key << "value" << YAML::Value << route.match.header_value;
    }
    out << YAML::EndMap;
  }
  out << YAML::Key << "case_sensitive" << YAML::Value << route.match.case_sensitive;
  out << YAML::EndMap;

  out << YAML::Key << "split" << YAML::Value << YAML::Flow << YAML::BeginMap;
  for (const SplitEntry& entry : route.split) {
    out << YAML::Key << config.backends[entry.backend].name << YAML::Value << entry.weight;
  }
  out << YAML::EndMap;

  switch (route.sticky.kind) {
    case Sticky::Kind::None:
      break;
    case Sticky::Kind::Cookie:
      out << YAML::Key << "sticky" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
          << "cookie" << YAML::Value << route.sticky.name;
      if (route.sticky.insert) {
        out << YAML::Key << "insert" << YAML::Value << true << YAML::Key << "max_age" << YAML::Value
            << formatDuration(route.sticky.max_age) << YAML::Key << "secure" << YAML::Value
            << route.sticky.secure;
      }
      out << YAML::EndMap;
      break;
    case Sticky::Kind::Header:
      out << YAML::Key << "sticky" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
          << "header" << YAML::Value << route.sticky.name << YAML::EndMap;
      break;
    case Sticky::Kind::ClientIp:
      out << YAML::Key << "sticky" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
          << "client_ip" << YAML::Value << true << YAML::EndMap;
      break;
  }
  if (route.fallback) {
    out << YAML::Key << "fallback" << YAML::Value << config.backends[*route.fallback].name;
  }
  if (route.stable) {
    out << YAML::Key << "stable" << YAML::Value << config.backends[*route.stable].name;
  }
  if (route.request_timeout) emitDuration(out, "timeout", *route.request_timeout);

  const Retry& retry = route.retry;
  out << YAML::Key << "retry" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << retry.enabled;
  out << YAML::Key << "attempts" << YAML::Value << retry.attempts;
  out << YAML::Key << "on" << YAML::Value;
  emitConditions(out, retry.on_connect_error, retry.on_timeout, retry.on_reset, nullptr,
                 retry.on_status);
  out << YAML::Key << "idempotent_only" << YAML::Value << retry.idempotent_only;
  emitDuration(out, "backoff_base", retry.backoff_base);
  emitDuration(out, "backoff_max", retry.backoff_max);
  out << YAML::Key << "retry_on_other_backend" << YAML::Value << retry.retry_on_other_backend;
  emitDouble(out, "budget_ratio", retry.budget_ratio);
  out << YAML::Key << "budget_min" << YAML::Value << retry.budget_min;
  out << YAML::EndMap;

  if (route.rate_limit) {
    out << YAML::Key << "rate_limit" << YAML::Value;
    emitRateLimit(out, *route.rate_limit);
  }
  out << YAML::EndMap;
}

const char* escapedSlashes(Http::EscapedSlashes action) {
  switch (action) {
    case Http::EscapedSlashes::Reject:
      return "reject";
    case Http::EscapedSlashes::Keep:
      return "keep";
    case Http::EscapedSlashes::Decode:
      return "decode";
  }
  return "reject";
}

const char* accessLogMode(AccessLog::Mode mode) {
  switch (mode) {
    case AccessLog::Mode::Off:
      return "off";
    case AccessLog::Mode::All:
      return "all";
    case AccessLog::Mode::ErrorsOnly:
      return "errors";
    case AccessLog::Mode::Sampled:
      return "sampled";
  }
  return "all";
}

}  // namespace

std::string dumpYaml(const Config& config) {
  YAML::Emitter out;
  out.SetBoolFormat(YAML::TrueFalseBool);
  out << YAML::BeginMap;

  out << YAML::Key << "listeners" << YAML::Value << YAML::BeginSeq;
  for (const Listener& listener : config.listeners) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << listener.name << YAML::Key
        << "address" << YAML::Value << listener.address.text;
    if (listener.proxy_protocol) out << YAML::Key << "proxy_protocol" << YAML::Value << true;
    if (listener.tls) {
      const ListenerTls& t = *listener.tls;
      out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
      out << YAML::Key << "certificates" << YAML::Value << YAML::BeginSeq;
      for (const TlsCertificate& c : t.certificates) {
        out << YAML::BeginMap << YAML::Key << "cert" << YAML::Value << c.cert << YAML::Key << "key"
            << YAML::Value << c.key << YAML::EndMap;
      }
      out << YAML::EndSeq;
      out << YAML::Key << "min_version" << YAML::Value << YAML::DoubleQuoted
          << (t.min_version == 13 ? "1.3" : "1.2");
      static const char* kModes[] = {"none", "optional", "require"};
      out << YAML::Key << "client_cert" << YAML::Value << kModes[static_cast<int>(t.client_cert)];
      if (!t.client_ca.empty()) out << YAML::Key << "client_ca" << YAML::Value << t.client_ca;
      out << YAML::Key << "client_subject_header" << YAML::Value << t.client_subject_header;
      emitDuration(out, "handshake_timeout", t.handshake_timeout);
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "workers" << YAML::Value << config.workers;

  const Timeouts& t = config.timeouts;
  out << YAML::Key << "timeouts" << YAML::Value << YAML::BeginMap;
  emitDuration(out, "connect", t.connect);
  emitDuration(out, "header_read", t.header_read);
  emitDuration(out, "request", t.request);
  emitDuration(out, "downstream_idle", t.downstream_idle);
  emitDuration(out, "upstream_idle", t.upstream_idle);
  emitDuration(out, "drain", t.drain);
  emitDuration(out, "drain_delay", t.drain_delay);
  out << YAML::EndMap;

  const Limits& l = config.limits;
  out << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_header_bytes" << YAML::Value << l.max_header_bytes;
  out << YAML::Key << "max_uri_bytes" << YAML::Value << l.max_uri_bytes;
  out << YAML::Key << "max_response_header_bytes" << YAML::Value << l.max_response_header_bytes;
  out << YAML::Key << "high_watermark" << YAML::Value << l.high_watermark;
  out << YAML::Key << "max_connections_per_worker" << YAML::Value << l.max_connections_per_worker;
  out << YAML::Key << "max_request_body_bytes" << YAML::Value << l.max_request_body_bytes;
  out << YAML::EndMap;

  out << YAML::Key << "override_header" << YAML::Value;
  if (config.override_header.empty()) {
    out << YAML::Null;
  } else {
    out << config.override_header;
  }

  out << YAML::Key << "http" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "normalize_path" << YAML::Value << config.http.normalize_path;
  out << YAML::Key << "merge_slashes" << YAML::Value << config.http.merge_slashes;
  out << YAML::Key << "escaped_slashes" << YAML::Value
      << escapedSlashes(config.http.escaped_slashes);
  out << YAML::Key << "xff_num_trusted_hops" << YAML::Value << config.http.trusted.hops;
  out << YAML::Key << "trusted_proxies" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const Cidr& c : config.http.trusted.cidrs) out << formatCidr(c);
  out << YAML::EndSeq;
  out << YAML::EndMap;

  out << YAML::Key << "filters" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& filter : config.filters) out << filter;
  out << YAML::EndSeq;
  if (config.rate_limit) {
    out << YAML::Key << "rate_limit" << YAML::Value;
    emitRateLimit(out, *config.rate_limit);
  }

  out << YAML::Key << "backends" << YAML::Value << YAML::BeginMap;
  for (const Backend& backend : config.backends) emitBackend(out, backend);
  out << YAML::EndMap;

  if (config.default_stable) {
    out << YAML::Key << "defaults" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "stable" << YAML::Value << config.backends[*config.default_stable].name;
    out << YAML::EndMap;
  }

  out << YAML::Key << "routes" << YAML::Value << YAML::BeginSeq;
  for (const Route& route : config.routes) emitRoute(out, config, route);
  out << YAML::EndSeq;

  out << YAML::Key << "state_dir" << YAML::Value;
  if (config.state_dir.empty()) {
    out << YAML::Null;
  } else {
    out << config.state_dir;
  }

  if (config.fleet.enabled) {
    const Fleet& f = config.fleet;
    out << YAML::Key << "fleet" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "redis" << YAML::Value << (f.host + ":" + std::to_string(f.port));
    out << YAML::Key << "password_env" << YAML::Value << f.password_env;
    out << YAML::Key << "key_prefix" << YAML::Value << f.key_prefix;
    out << YAML::Key << "timeout" << YAML::Value << formatDuration(f.timeout);
    out << YAML::Key << "replica_id" << YAML::Value << f.replica_id;
    out << YAML::EndMap;
  }
  out << YAML::Key << "admin" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << config.admin.enabled;
  out << YAML::Key << "address" << YAML::Value << config.admin.address.text;
  out << YAML::Key << "token_file" << YAML::Value << config.admin.token_file;
  out << YAML::Key << "token_env" << YAML::Value << config.admin.token_env;
  out << YAML::Key << "allow_unauthenticated" << YAML::Value << config.admin.allow_unauthenticated;
  out << YAML::EndMap;

  out << YAML::Key << "access_log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "mode" << YAML::Value << accessLogMode(config.access_log.mode);
  out << YAML::Key << "path" << YAML::Value
      << (config.access_log.path.empty() ? std::string("-") : config.access_log.path);
  emitDouble(out, "sample", config.access_log.sample);
  out << YAML::EndMap;

  out << YAML::Key << "metrics" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << config.metrics_enabled;
  out << YAML::EndMap;

  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace cutover::config
