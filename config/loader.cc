// Loading a config: reading the file, YAML documents, the top-level sections (listeners, workers,
// timeouts, limits, filters, admin, access log). Backends and routes live in schema_backends.cc
// and schema_routes.cc; the Loader class that ties them together is in schema.h.
#include "config/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

#include "config/route_table.h"
#include "config/schema.h"

namespace cutover::config {

namespace detail {

namespace {

constexpr uint32_t kMaxWorkers = 64;

const std::vector<std::string> kKnownFilters(std::begin(kFilterNames), std::end(kFilterNames));

bool isEnvName(const std::string& text) {
  if (text.empty() || (text[0] >= '0' && text[0] <= '9')) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

void Loader::load(const YAML::Node& root) {
  if (root.IsNull()) {
    errors_.add(YAML::Mark(), "",
                "the file is empty: expected a map with listeners, backends "
                "and routes");
    return;
  }
  MapReader top(errors_, root, "",
                {"listeners", "workers", "timeouts", "limits", "override_header", "http", "filters",
                 "rate_limit", "backends", "routes", "admin", "access_log", "metrics", "defaults",
                 "state_dir", "fleet"});
  if (!top.ok()) return;
  // Order matters only where later sections refer to earlier ones: backends before routes.
  loadListeners(top);
  loadWorkers(top);
  loadTimeouts(top);
  loadLimits(top);
  loadOverrideHeader(top);
  loadHttp(top);
  loadFilters(top);
  if (top.has("rate_limit")) {
    RateLimit limit;
    if (loadRateLimit(top.value("rate_limit"), "rate_limit", limit)) config_.rate_limit = limit;
    rate_limits_.emplace_back(top.value("rate_limit"), "rate_limit");
  }
  loadBackends(top);
  loadDefaults(top);
  loadRoutes(top);
  loadAdmin(top);
  loadAccessLog(top);
  if (top.has("metrics")) {
    MapReader map(errors_, top.value("metrics"), "metrics", {"enabled"}, true);
    map.getBool("enabled", config_.metrics_enabled);
  }
  if (top.has("state_dir")) {
    const YAML::Node& node = top.value("state_dir");
    // Null or "" spell "not persisted" (dumpYaml writes ~).
    if (!node.IsNull() && !(node.IsScalar() && node.Scalar().empty()) &&
        readString(errors_, node, "state_dir", config_.state_dir) &&
        (config_.state_dir.find('\0') != std::string::npos || config_.state_dir.size() > 4096)) {
      errors_.add(node, "state_dir", "expected a directory path, got " + quoted(config_.state_dir));
    }
  }
  loadFleet(top);
  if (!rate_limit_filter_) {
    for (const auto& [node, path] : rate_limits_) {
      errors_.add(node, path,
                  "the 'rate_limit' filter is not in filters, so this limit would never apply");
    }
  }
}

void Loader::loadListeners(const MapReader& top) {
  if (!top.require("listeners")) return;
  const YAML::Node& list = top.value("listeners");
  if (!list.IsSequence() || list.size() == 0) {
    errors_.add(list, "listeners",
                "expected a sequence of at least one listener, got " + describe(list));
    return;
  }
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = indexPath("listeners", i);
    MapReader map(errors_, list[i], path, {"name", "address", "proxy_protocol", "tls"});
    if (!map.ok()) continue;
    Listener listener;
    bool named = map.require("name") && map.getString("name", listener.name);
    if (named && !isName(listener.name)) {
      errors_.add(map.value("name"), map.path("name"),
                  "must be 1..64 letters, digits, '_', '-' or '.', got " + quoted(listener.name));
      named = false;
    }
    if (named) {
      for (const Listener& other : config_.listeners) {
        if (other.name == listener.name) {
          errors_.add(map.value("name"), map.path("name"),
                      "duplicate listener name " + quoted(listener.name));
        }
      }
    }
    if (map.require("address") && map.getAddress("address", listener.address)) {
      for (const Listener& other : config_.listeners) {
        if (other.address.text == listener.address.text && !other.address.text.ends_with(":0")) {
          errors_.add(map.value("address"), map.path("address"),
                      "address " + listener.address.text + " is already used by listener " +
                          quoted(other.name));
        }
      }
    }
    map.getBool("proxy_protocol", listener.proxy_protocol);
    if (map.has("tls")) {
      listener.tls.emplace();
      loadListenerTls(map.value("tls"), map.path("tls"), *listener.tls);
    }
    config_.listeners.push_back(std::move(listener));
  }
}

void Loader::loadListenerTls(const YAML::Node& node, const std::string& path, ListenerTls& out) {
  MapReader map(errors_, node, path,
                {"certificates", "min_version", "client_ca", "client_cert", "client_subject_header",
                 "handshake_timeout"});
  if (!map.ok()) return;
  auto pos = [](const YAML::Node& n) { return SourcePos{n.Mark().line + 1, n.Mark().column + 1}; };
  if (map.require("certificates")) {
    const YAML::Node& list = map.value("certificates");
    if (!list.IsSequence() || list.size() == 0) {
      errors_.add(list, map.path("certificates"),
                  "expected a sequence of at least one {cert, key}, got " + describe(list));
    } else {
      for (size_t i = 0; i < list.size(); ++i) {
        MapReader c(errors_, list[i], indexPath(map.path("certificates"), i), {"cert", "key"});
        if (!c.ok()) continue;
        TlsCertificate cert;
        bool ok = c.require("cert") && c.getString("cert", cert.cert);
        ok = c.require("key") && c.getString("key", cert.key) && ok;
        if (!ok) continue;
        cert.cert_at = pos(c.value("cert"));
        cert.key_at = pos(c.value("key"));
        out.certificates.push_back(std::move(cert));
      }
    }
  }
  map.getTlsVersion("min_version", out.min_version);
  if (map.has("client_cert")) {
    std::string v;
    if (map.getString("client_cert", v)) {
      if (v == "none") {
        out.client_cert = ClientCertMode::None;
      } else if (v == "optional") {
        out.client_cert = ClientCertMode::Optional;
      } else if (v == "require") {
        out.client_cert = ClientCertMode::Require;
      } else {
        errors_.add(map.value("client_cert"), map.path("client_cert"),
                    "must be none, optional or require, got " + quoted(v));
      }
    }
  }
  if (map.has("client_ca") && map.getString("client_ca", out.client_ca)) {
    out.client_ca_at = pos(map.value("client_ca"));
  }
  if (out.client_cert != ClientCertMode::None && out.client_ca.empty()) {
    errors_.add(map.has("client_cert") ? map.value("client_cert") : node, map.path("client_ca"),
                "required when client_cert is optional or require");
  }
  if (map.has("client_subject_header") &&
      map.getString("client_subject_header", out.client_subject_header)) {
    if (!isToken(out.client_subject_header)) {
      errors_.add(map.value("client_subject_header"), map.path("client_subject_header"),
                  "must be a header name, got " + quoted(out.client_subject_header));
    }
    out.client_subject_header = lowerCase(out.client_subject_header);
  }
  map.getDuration("handshake_timeout", kMinDuration, std::chrono::minutes(5),
                  out.handshake_timeout);
}

void Loader::loadWorkers(const MapReader& top) {
  if (!top.has("workers")) return;
  const YAML::Node& node = top.value("workers");
  if (node.IsScalar() && node.Scalar() == "auto") {
    unsigned cores = std::thread::hardware_concurrency();
    config_.workers = std::clamp<uint32_t>(cores, 1, kMaxWorkers);
    return;
  }
  readUint32(errors_, node, "workers", 1, kMaxWorkers, config_.workers);
}

void Loader::loadTimeouts(const MapReader& top) {
  if (!top.has("timeouts")) return;
  MapReader map(errors_, top.value("timeouts"), "timeouts",
                {"connect", "header_read", "request", "downstream_idle", "upstream_idle", "drain",
                 "drain_delay"},
                true);
  Timeouts& t = config_.timeouts;
  map.getDuration("connect", kMinDuration, kMaxDuration, t.connect);
  map.getDuration("header_read", kMinDuration, kMaxDuration, t.header_read);
  map.getDuration("request", kMinDuration, kMaxDuration, t.request);
  map.getDuration("downstream_idle", kMinDuration, kMaxDuration, t.downstream_idle);
  map.getDuration("upstream_idle", kMinDuration, kMaxDuration, t.upstream_idle);
  map.getDuration("drain", Duration(0), std::chrono::hours(1), t.drain);
  map.getDuration("drain_delay", Duration(0), std::chrono::minutes(10), t.drain_delay);
}

void Loader::loadLimits(const MapReader& top) {
  if (!top.has("limits")) return;
  MapReader map(errors_, top.value("limits"), "limits",
                {"max_header_bytes", "max_uri_bytes", "max_response_header_bytes", "high_watermark",
                 "max_connections_per_worker", "max_request_body_bytes"},
                true);
  constexpr uint32_t KiB = 1024;
  constexpr uint32_t MiB = 1024 * 1024;
  Limits& l = config_.limits;
  map.getSize("max_header_bytes", 1 * KiB, 16 * MiB, l.max_header_bytes);
  map.getSize("max_uri_bytes", 64, 16 * MiB, l.max_uri_bytes);
  map.getSize("max_response_header_bytes", 1 * KiB, 16 * MiB, l.max_response_header_bytes);
  map.getSize("high_watermark", 4 * KiB, 1024 * MiB, l.high_watermark);
  map.getUint32("max_connections_per_worker", 1, 1'000'000, l.max_connections_per_worker);
  map.getSize("max_request_body_bytes", uint64_t{0}, uint64_t{1024} * 1024 * MiB,
              l.max_request_body_bytes);  // 0 = unlimited; at most 1 TiB (1024GiB)
}

bool Loader::readHeaderName(const YAML::Node& node, const std::string& path, std::string& out) {
  std::string name;
  if (!readString(errors_, node, path, name)) return false;
  if (!isToken(name)) {
    errors_.add(node, path,
                "expected a header name (letters, digits, '-', ...), got " + quoted(name));
    return false;
  }
  out = lowerCase(name);
  return true;
}

void Loader::loadOverrideHeader(const MapReader& top) {
  if (!top.has("override_header")) return;
  const YAML::Node& node = top.value("override_header");
  // Null or "" spell "off" explicitly (dumpYaml writes ~).
  if (node.IsNull() || (node.IsScalar() && node.Scalar().empty())) return;
  readHeaderName(node, "override_header", config_.override_header);
}

void Loader::loadHttp(const MapReader& top) {
  if (!top.has("http")) return;
  MapReader map(errors_, top.value("http"), "http",
                {"normalize_path", "merge_slashes", "escaped_slashes", "xff_num_trusted_hops",
                 "trusted_proxies"},
                true);
  Http& http = config_.http;
  map.getBool("normalize_path", http.normalize_path);
  map.getBool("merge_slashes", http.merge_slashes);
  std::string action;
  if (map.getString("escaped_slashes", action)) {
    if (action == "reject") {
      http.escaped_slashes = Http::EscapedSlashes::Reject;
    } else if (action == "keep") {
      http.escaped_slashes = Http::EscapedSlashes::Keep;
    } else if (action == "decode") {
      http.escaped_slashes = Http::EscapedSlashes::Decode;
    } else {
      errors_.add(map.value("escaped_slashes"), map.path("escaped_slashes"),
                  "expected reject, keep or decode, got " + quoted(action));
    }
  }
  map.getUint32("xff_num_trusted_hops", 0, 16, http.trusted.hops);
  if (map.has("trusted_proxies")) {
    const YAML::Node& list = map.value("trusted_proxies");
    std::string path = map.path("trusted_proxies");
    if (!list.IsSequence()) {
      errors_.add(list, path, "expected a sequence of addresses or CIDRs, got " + describe(list));
    } else {
      for (size_t i = 0; i < list.size(); ++i) {
        Cidr c;
        std::string item = path + "[" + std::to_string(i) + "]";
        if (!list[i].IsScalar() || !parseCidr(list[i].Scalar(), c)) {
          errors_.add(list[i], item,
                      "expected an IP address or CIDR with no host bits set (10.0.0.0/8, "
                      "fd00::/8, 192.0.2.7), got " +
                          describe(list[i]));
          continue;
        }
        http.trusted.cidrs.push_back(c);
      }
    }
    if (http.trusted.hops > 0 && list.IsSequence() && list.size() > 0) {
      errors_.add(list, path,
                  "set either xff_num_trusted_hops or trusted_proxies, not both (a trusted "
                  "peer's X-Forwarded-For is read one way)");
    }
  }
}

void Loader::loadFilters(const MapReader& top) {
  if (!top.has("filters")) {
    config_.filters = kKnownFilters;  // every filter, in the listed order
    return;
  }
  const YAML::Node& list = top.value("filters");
  if (!list.IsSequence()) {
    errors_.add(list, "filters", "expected a sequence of filter names, got " + describe(list));
    return;
  }
  bool router = false;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = indexPath("filters", i);
    std::string name;
    if (!readString(errors_, list[i], path, name)) continue;
    if (std::find(kKnownFilters.begin(), kKnownFilters.end(), name) == kKnownFilters.end()) {
      errors_.add(list[i], path,
                  "unknown filter " + quoted(name) + " (known: " + joinNames(kKnownFilters) + ")");
      continue;
    }
    if (std::find(config_.filters.begin(), config_.filters.end(), name) != config_.filters.end()) {
      errors_.add(list[i], path, "duplicate filter " + quoted(name));
      continue;
    }
    if (name == "router") {
      router = true;
      if (i + 1 != list.size()) errors_.add(list[i], path, "router must be the last filter");
    }
    config_.filters.push_back(name);
  }
  if (!router) errors_.add(list, "filters", "the chain must end with 'router'");
  rate_limit_filter_ = std::find(config_.filters.begin(), config_.filters.end(), "rate_limit") !=
                       config_.filters.end();
}

void Loader::loadAdmin(const MapReader& top) {
  Admin& admin = config_.admin;
  parseSocketAddress("127.0.0.1:9901", admin.address);
  if (!top.has("admin")) return;
  MapReader map(errors_, top.value("admin"), "admin",
                {"enabled", "address", "token_file", "token_env", "allow_unauthenticated"}, true);
  map.getBool("enabled", admin.enabled);
  map.getBool("allow_unauthenticated", admin.allow_unauthenticated);
  const bool address_ok = map.getAddress("address", admin.address);
  if (address_ok && admin.enabled && !admin.address.text.ends_with(":0")) {
    for (const Listener& listener : config_.listeners) {
      if (listener.address.text == admin.address.text) {
        errors_.add(map.value("address"), map.path("address"),
                    "address " + admin.address.text + " is already used by listener " +
                        quoted(listener.name));
      }
    }
  }
  map.getString("token_file", admin.token_file);
  const bool env_ok = !map.getString("token_env", admin.token_env) || admin.token_env.empty() ||
                      isEnvName(admin.token_env);
  if (!env_ok) {
    errors_.add(map.value("token_env"), map.path("token_env"),
                "expected an environment variable name, got " + quoted(admin.token_env));
  }
  if (!admin.enabled) return;
  loadAdminToken(map, env_ok);
  if (address_ok && admin.token.empty() && !admin.allow_unauthenticated &&
      !isLoopbackAddress(admin.address)) {
    errors_.add(map.value("address"), map.path("address"),
                "admin address " + admin.address.text +
                    " is not loopback and no token is configured: anyone who reaches it could "
                    "reload, drain or roll back; set admin.token_file or admin.token_env, or "
                    "admin.allow_unauthenticated: true");
  }
}

// Fail closed: a token source that is configured but yields no token is an error, never "no
// token" (which would leave every mutating call open). The file read refuses FIFOs and devices
// without waiting and is at most kMaxTokenFileBytes; at reload the whole load runs on the thread
// pool (Server::loadThenApply), so it never blocks the main loop.
void Loader::loadAdminToken(const MapReader& map, bool env_ok) {
  Admin& admin = config_.admin;
  auto trim = [](std::string_view v) {
    const size_t b = v.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return std::string();
    const size_t e = v.find_last_not_of(" \t\r\n");
    return std::string(v.substr(b, e - b + 1));
  };
  if (!admin.token_file.empty()) {
    std::string text, why;
    if (!readRegularFile(admin.token_file, kMaxTokenFileBytes, text, why)) {
      errors_.add(map.value("token_file"), map.path("token_file"),
                  "cannot read the token file " + quoted(admin.token_file) + ": " + why);
      return;
    }
    admin.token = trim(text);
    if (admin.token.empty()) {
      errors_.add(map.value("token_file"), map.path("token_file"),
                  "the token file " + quoted(admin.token_file) + " is empty or blank");
    }
    return;
  }
  if (admin.token_env.empty() || !env_ok) return;
  const char* value = std::getenv(admin.token_env.c_str());
  if (value == nullptr) {
    errors_.add(map.value("token_env"), map.path("token_env"),
                "environment variable " + admin.token_env + " is not set");
    return;
  }
  admin.token = trim(value);
  if (admin.token.empty()) {
    errors_.add(map.value("token_env"), map.path("token_env"),
                "environment variable " + admin.token_env + " is empty or blank");
  }
}

void Loader::loadAccessLog(const MapReader& top) {
  if (!top.has("access_log")) return;
  AccessLog& log = config_.access_log;
  MapReader map(errors_, top.value("access_log"), "access_log", {"mode", "path", "sample"}, true);
  std::string mode;
  if (map.getString("mode", mode)) {
    if (mode == "all") {
      log.mode = AccessLog::Mode::All;
    } else if (mode == "off") {
      log.mode = AccessLog::Mode::Off;
    } else if (mode == "errors") {
      log.mode = AccessLog::Mode::ErrorsOnly;
    } else if (mode == "sampled") {
      log.mode = AccessLog::Mode::Sampled;
    } else {
      errors_.add(map.value("mode"), map.path("mode"),
                  "expected all, off, errors or sampled, got " + quoted(mode));
    }
  }
  if (map.getString("path", log.path) && log.path == "-") log.path.clear();  // both mean stdout
  map.getDouble("sample", 0.0, 1.0, log.sample);
}

// Counts documents without building nodes. yaml-cpp 0.7's LoadAll never returns on text such as
// ",a" (the parser reports an empty document without consuming the stray token, forever, growing a
// vector until memory runs out), so the loader counts documents itself, stops when the parser

}  // namespace detail

namespace {

using namespace detail;

std::string fnv1a64Hex(const std::string& bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(hash));
  return buffer;
}

// makes no progress, and lets YAML::Load build only the first document.
class DocumentCounter : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;

  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Checks the document structure; false (with the error reported) when it is unusable.
bool checkDocuments(const std::string& text, Errors& errors) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentCounter counter;
  // A third document start tells whether the parser is stuck on the second one.
  while (counter.starts.size() < 3 && parser.HandleNextDocument(counter)) {
    size_t n = counter.starts.size();
    if (n >= 2 && counter.starts[n - 1].pos == counter.starts[n - 2].pos) {
      const YAML::Mark& mark = counter.starts[n - 2];
      std::string what = mark.pos >= 0 && static_cast<size_t>(mark.pos) < text.size()
                             ? "'" + text.substr(static_cast<size_t>(mark.pos), 1) + "'"
                             : "token";
      errors.add(mark, "", "YAML syntax error: unexpected " + what);
      return false;
    }
  }
  if (counter.starts.size() > 1) {
    errors.add(counter.starts[1], "", "only one YAML document is allowed per file");
    return false;
  }
  return true;
}

}  // namespace

LoadResult loadString(const std::string& text, const std::string& file) {
  Errors errors(file);
  auto config = std::make_shared<Config>();
  config->file = file;
  config->hash = fnv1a64Hex(text);
  try {
    if (checkDocuments(text, errors)) Loader(errors, *config).load(YAML::Load(text));
  } catch (const YAML::ParserException& e) {
    errors.add(e.mark, "", "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    // Not expected (the loader avoids throwing yaml-cpp calls), but never let one escape.
    errors.add(YAML::Mark::null_mark(), "", std::string("cannot load: ") + e.what());
  }
  LoadResult result;
  result.errors = errors.take();
  if (result.errors.empty()) {
    config->route_table = RouteTable::build(config->routes);
    result.config = std::move(config);
  }
  return result;
}

static std::string fileTypeName(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    default:
      return "not a regular file";
  }
}

bool readRegularFile(const std::string& path, size_t max_bytes, std::string& out,
                     std::string& error) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    error = std::strerror(errno);
    return false;
  }
  auto fail = [&](std::string why) {
    ::close(fd);
    error = std::move(why);
    return false;
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) {
    return fail("not a regular file (" + fileTypeName(st.st_mode) + ")");
  }
  const std::string too_large =
      "larger than " + (max_bytes % (1024 * 1024) == 0
                            ? std::to_string(max_bytes / (1024 * 1024)) + " MiB"
                            : std::to_string(max_bytes) + " bytes");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) return fail(too_large);
  std::string text;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::strerror(errno));
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > max_bytes) return fail(too_large);  // grew while being read
  }
  ::close(fd);
  out = std::move(text);
  return true;
}

LoadResult loadFile(const std::string& path) {
  std::string text, why;
  if (!readRegularFile(path, kMaxConfigFileBytes, text, why)) {
    LoadResult result;
    Error error;
    error.file = path;
    error.message = "cannot read the file: " + why;
    result.errors.push_back(std::move(error));
    return result;
  }
  return loadString(text, path);
}

}  // namespace cutover::config