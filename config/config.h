// The parsed, validated configuration: plain immutable data.
//
// Built once by config::load() (config/loader.h) from a YAML file, checked completely (types,
// ranges, unknown keys, cross-field rules), then only ever read. The data plane never sees YAML and
// never throws; everything it needs (split thresholds, backend indices) is precomputed here.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/client_address.h"
#include "common/path_normalize.h"

namespace cutover::config {

// Every filter name a config may list, in the default chain's order: the one list of them. The
// registry (filters/registry.cc) builds each but "router" (the core's) and checks at compile time
// that it covers exactly these.
inline constexpr std::string_view kFilterNames[] = {"request_id", "rate_limit", "router"};

using Duration = std::chrono::milliseconds;

// A numeric socket address ("127.0.0.1:8080", "[::1]:9001", "0.0.0.0:0"; "localhost:N" means
// 127.0.0.1). Names needing DNS are rejected at load: resolving them would block.
struct SocketAddress {
  std::string text;  // as written, normalised ("127.0.0.1:9001")
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// A backend endpoint written as a DNS name ("web.shop.svc.cluster.local:8080"). Never resolved at
// load (that would block): the server resolves it on libuv's thread pool (proxy/dns_resolver.h)
// and uses every address returned as an endpoint.
struct DnsName {
  std::string host;  // as written (RFC 1123 labels, optional trailing dot)
  uint16_t port = 0;
  std::string text;  // as written, "host:port"
  bool operator==(const DnsName&) const = default;
};

// Where a value was written (for errors found after loading, e.g. a certificate that has expired).
struct SourcePos {
  int line = 0;  // 1-based; 0 unknown
  int column = 0;
};

enum class ClientCertMode : uint8_t { None, Optional, Require };

// listeners[].tls: TLS termination (net/tls_context.h builds the OpenSSL side from these paths).
struct TlsCertificate {
  std::string cert;  // PEM chain, leaf first
  std::string key;
  SourcePos cert_at, key_at;
};
struct ListenerTls {
  std::vector<TlsCertificate> certificates;  // first is the default; others chosen by SNI
  int min_version = 12;                      // 12 or 13 (TLS 1.2 / 1.3)
  std::string client_ca;                     // required unless client_cert is none
  SourcePos client_ca_at;
  ClientCertMode client_cert = ClientCertMode::None;
  // Carries the verified client certificate's subject and SAN to the backend (always removed
  // from the client's request first). Lower case.
  std::string client_subject_header = "x-client-cert-subject";
  Duration handshake_timeout{std::chrono::seconds(10)};
};

struct Listener {
  std::string name;
  SocketAddress address;
  // Every connection starts with a PROXY protocol header (v1 or v2, net/proxy_protocol.h) from an
  // L4 load balancer; its source address becomes the connection's peer. A connection without a
  // valid one is closed.
  bool proxy_protocol = false;
  std::optional<ListenerTls> tls;
};

struct Timeouts {
  Duration connect{std::chrono::seconds(5)};           // upstream TCP connect
  Duration header_read{std::chrono::seconds(10)};      // first byte to end of request headers
  Duration request{std::chrono::seconds(60)};          // whole request, all attempts included
  Duration downstream_idle{std::chrono::seconds(60)};  // idle keep-alive client connection
  Duration upstream_idle{
      std::chrono::seconds(60)};             // no bytes from backend while waiting/streaming
  Duration drain{std::chrono::seconds(20)};  // SIGTERM: finish in-flight work within this
  // SIGTERM / POST /drain: keep accepting this long first (answers say Connection: close, /ready
  // is 503) while load balancers stop routing here; then close the listeners. 0 = at once.
  Duration drain_delay{std::chrono::seconds(5)};
  bool operator==(const Timeouts&) const = default;
};

struct Limits {
  uint32_t max_header_bytes = 64 * 1024;           // request header block; over → 431
  uint32_t max_uri_bytes = 8 * 1024;               // request target; over → 414
  uint32_t max_response_header_bytes = 64 * 1024;  // backend header block; over → 502
  uint32_t high_watermark = 1024 * 1024;           // pending write bytes that pause the other side
  // Request body (after chunk framing); over → 413 and the connection closes. 0 = unlimited, the
  // default: a sidecar put in front of an application must not start refusing its uploads.
  uint64_t max_request_body_bytes = 0;
  // Open client connections per worker; a connection accepted beyond it is closed at once
  // (counted in cutover_downstream_connections_rejected_total).
  uint32_t max_connections_per_worker = 1024;
  bool operator==(const Limits&) const = default;
};

// Token-bucket limit: `rate` tokens per `per`, bucket capacity `burst` (default = rate).
struct RateLimit {
  // ClientCert: the verified client certificate's subject on a TLS listener (client_cert:
  // optional|require); requests without one are keyed by client address.
  enum class Key { Route, ClientIp, Header, ClientCert };
  enum class Mode { Enforce, DryRun };
  uint32_t rate = 0;
  Duration per{std::chrono::seconds(1)};
  uint32_t burst = 0;
  Key key = Key::ClientIp;
  std::string header;  // Key::Header: lower-case header name
  Mode mode = Mode::Enforce;
  bool response_headers = true;  // RateLimit-* on allowed responses too
  uint32_t max_keys = 100000;    // bounded per-key table
  bool operator==(const RateLimit&) const = default;
};

struct CircuitBreaker {
  bool enabled = false;
  uint32_t consecutive_failures = 5;
  Duration cooldown{std::chrono::seconds(60)};
  Duration max_cooldown{std::chrono::seconds(300)};
  double cooldown_multiplier = 1.5;
  double jitter = 0.2;  // ± fraction applied to each cool-down
  uint32_t half_open_probes = 1;
  bool on_connect_error = true;
  bool on_timeout = true;
  bool on_reset = true;
  bool on_5xx = true;
  std::vector<uint16_t> on_status;  // extra codes counted as failures
  // Concurrency limits; 0 = unlimited. Exceeding one answers 503 with its own reason.
  uint32_t max_connections = 0;
  uint32_t max_pending = 0;
  uint32_t max_inflight = 0;
  bool operator==(const CircuitBreaker&) const = default;
};

struct HealthCheck {
  bool enabled = false;
  std::string path = "/health";
  Duration interval{std::chrono::seconds(5)};
  Duration timeout{std::chrono::seconds(1)};
  uint32_t healthy_threshold = 2;
  uint32_t unhealthy_threshold = 3;
  Duration backoff_base{std::chrono::seconds(1)};
  Duration backoff_max{std::chrono::seconds(30)};
  bool operator==(const HealthCheck&) const = default;
};

struct Pool {
  uint32_t max_idle_per_endpoint = 64;  // per worker
  Duration idle_timeout{std::chrono::seconds(30)};
  bool operator==(const Pool&) const = default;
};

// backends.X.tls: TLS to the backend (proxy/backend_tls.h builds the OpenSSL client context).
struct BackendTls {
  std::string sni;  // empty: the endpoint's DNS name when it came from one, else none
  std::string ca;   // empty: the system store
  SourcePos ca_at;
  bool verify = true;
  std::string client_cert, client_key;  // both or neither
  SourcePos client_cert_at, client_key_at;
  int min_version = 12;  // 12 or 13
};

struct Backend {
  std::string name;
  // Numeric endpoints as written; on the data-plane config (proxy/dns_resolver.h
  // withResolvedEndpoints) also the addresses resolved from `dns`, after them.
  std::vector<SocketAddress> endpoints;
  std::vector<DnsName> dns;                        // endpoints given as DNS names
  Duration dns_refresh{std::chrono::seconds(30)};  // re-resolution interval of `dns`
  // Data-plane config only: per endpoint, the index in `dns` of the name it was resolved from, or
  // -1 for one written as a number. Empty (as loaded): every endpoint was written as a number.
  std::vector<int32_t> endpoint_dns;
  Pool pool;
  CircuitBreaker circuit_breaker;
  HealthCheck health_check;
  std::optional<RateLimit> rate_limit;  // whole-backend admission limit
  std::optional<BackendTls> tls;
};

struct Retry {
  bool enabled = false;
  uint32_t attempts = 1;  // retries after the first attempt
  bool on_connect_error = true;
  bool on_reset = true;
  bool on_timeout = true;
  std::vector<uint16_t> on_status{502, 503, 504};
  bool idempotent_only = true;  // else: any request whose body has not started to be sent
  Duration backoff_base{std::chrono::milliseconds(25)};
  Duration backoff_max{std::chrono::milliseconds(250)};
  bool retry_on_other_backend = false;
  double budget_ratio = 0.2;  // retries ≤ 20% of in-flight requests per backend
  uint32_t budget_min = 3;    // ... but always allow this many concurrent retries
  bool operator==(const Retry&) const = default;
};

struct RouteMatch {
  enum class Kind { Prefix, Exact };
  Kind kind = Kind::Prefix;
  std::string path;
  std::string header;        // optional: lower-case header name that must be present
  std::string header_value;  // optional: exact value it must have (empty = any)
  // false: `path` is compared ASCII case-insensitively (the backend must treat case the same way)
  bool case_sensitive = true;
  bool operator==(const RouteMatch&) const = default;
};

struct SplitEntry {
  uint32_t backend = 0;  // index into Config::backends
  uint32_t weight = 0;   // 0..100, entries sum to 100
};

struct Sticky {
  enum class Kind { None, Cookie, Header, ClientIp };
  Kind kind = Kind::None;
  std::string name;  // cookie name, or lower-case header name
  // Cookie only: a request without the cookie gets a random key, and the response sets the
  // cookie to it, so a visitor stays on one side from the first request.
  bool insert = false;
  Duration max_age{std::chrono::hours(24 * 30)};
  bool secure = false;  // always add Secure (it is added anyway when the request came over https)
  bool operator==(const Sticky&) const = default;
};

struct Route {
  std::string name;
  RouteMatch match;
  // Ordered so that `new` (the backend named "new", if present) comes first: it owns the low
  // buckets. thresholds[i] = cumulative weight * 100, so bucket (0..9999) < thresholds[i] picks i.
  std::vector<SplitEntry> split;
  std::vector<uint32_t> thresholds;
  Sticky sticky;
  std::optional<uint32_t> fallback;  // backend index used when the chosen one is open/unhealthy
  // The rollback target (backend index): `stable:`, else `defaults.stable`, else the backend named
  // "legacy" when there is one. A rollback sends 100% here. Always set on a route whose split names
  // more than one backend (the loader refuses one without).
  std::optional<uint32_t> stable;
  Retry retry;
  std::optional<RateLimit> rate_limit;
  std::optional<Duration> request_timeout;  // overrides Timeouts::request
};

// Request paths are normalised before routing, and the normalised target is what the backend gets,
// so a route's limits apply to every spelling the backend would serve as the same path.
// The `http:` section: how request paths are normalised before routing (common/path_normalize.h),
// and which proxies in front of cutover are trusted to name the client (common/client_address.h).
struct Http : PathOptions {
  TrustedProxies trusted;  // xff_num_trusted_hops or trusted_proxies (at most one of them)
};

class RouteTable;  // config/route_table.h

struct Admin {
  bool enabled = true;
  SocketAddress address;   // default 127.0.0.1:9901
  std::string token_file;  // read at load (start, reload, --check); wins over token_env
  std::string token_env;
  // The bearer token mutating calls need, resolved at load from token_file or token_env (trimmed).
  // A configured source that yields no token is a load error, never an open admin API. Empty only
  // when neither source is set. Never dumped (/config shows the source, not the secret).
  std::string token;
  // Allows a non-loopback admin address without a token (otherwise a load error).
  bool allow_unauthenticated = false;
};

// The `fleet:` section: replicas share control state (rollback) and a registry through Redis.
// Absent = one process with local state, as before.
struct Fleet {
  bool enabled = false;  // a `fleet:` section is present
  std::string host;      // `redis: host:port`; a DNS name is resolved off the loop
  uint16_t port = 6379;
  std::string password_env;  // AUTH with this variable's value; unset variable = load error
  // The password, resolved at load from password_env. Never dumped.
  std::string password;
  std::string key_prefix = "cutover:";              // every key and channel starts with it
  Duration timeout{std::chrono::milliseconds(20)};  // per Redis command
  std::string replica_id;                           // empty = hostname-pid, chosen at start
  bool operator==(const Fleet&) const = default;
};

struct AccessLog {
  enum class Mode { Off, All, ErrorsOnly, Sampled };
  Mode mode = Mode::All;
  std::string path;  // empty or "-" = stdout
  double sample = 1.0;
};

struct Config {
  std::string file;      // path it was loaded from
  std::string hash;      // hex of a hash over the file bytes
  uint32_t workers = 1;  // "auto" resolved to the core count at load
  std::vector<Listener> listeners;
  Timeouts timeouts;
  Limits limits;
  std::vector<Backend> backends;
  std::vector<Route> routes;
  // Index over routes[].match built by the loader (null for few routes, where a scan is faster,
  // and for configs built by hand). Code that edits `routes` afterwards keeps paths unchanged.
  std::shared_ptr<const RouteTable> route_table;
  Http http;
  std::vector<std::string> filters;     // chain order as written, e.g. [rate_limit, router]
  std::optional<RateLimit> rate_limit;  // chain default; a route's own rate_limit overrides it
  std::string override_header;          // empty = off; else lower-case name, e.g. x-cutover-backend
  Admin admin;
  AccessLog access_log;
  bool metrics_enabled = true;  // `metrics: {enabled: false}` skips per-request metric work
  std::optional<uint32_t> default_stable;  // `defaults.stable`: routes' rollback target
  // `state_dir`: where the rollback state and the last config that loaded are persisted (empty =
  // not persisted). Read at start only (the `--state-dir` flag wins over it).
  std::string state_dir;
  Fleet fleet;

  // Index of the backend with this name, or -1.
  int backendIndex(const std::string& name) const;
};

}  // namespace cutover::config
