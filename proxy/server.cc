#include "proxy/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/clock.h"
#include "config/loader.h"
#include "filters/registry.h"
#include "policy/circuit_breaker.h"
#include "policy/health_state.h"
#include "policy/retry_budget.h"
#include "policy/state_store.h"
#include "policy/token_bucket.h"
#include "proxy/admin_server.h"
#include "proxy/config_diff.h"
#include "proxy/config_watcher.h"
#include "proxy/dns_resolver.h"
#include "proxy/fleet.h"
#include "proxy/health_checker.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/stats.h"
#include "proxy/tls_metrics.h"
#include "proxy/worker.h"

namespace cutover {

namespace {

// What a failed asynchronous read of the config file reports (ConfigWatcher's errors).
std::string readErrorText(int uv_error) {
  if (uv_error == UV_EFTYPE) return "not a regular file";
  if (uv_error == UV_EFBIG) return "larger than 16 MiB";
  return uv_strerror(uv_error);
}

// SO_REUSEPORT would let a second cutover (or anything else with the option set) share a port
// silently and take half its traffic; a probe bind without the option refuses that, as
// HAProxy and NGINX do by default.
bool portIsFree(const sockaddr_storage& addr, socklen_t len) {
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;  // the real bind will report the problem
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  bool free = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0 || errno != EADDRINUSE;
  ::close(fd);
  return free;
}

}  // namespace

Server::Server(std::string config_path, std::string state_dir)
    : config_path_(std::move(config_path)), state_dir_flag_(std::move(state_dir)) {}

Server::~Server() = default;

// ---- snapshots ------------------------------------------------------------------------------

std::shared_ptr<const Snapshot> Server::buildSnapshot(std::shared_ptr<const config::Config> cfg) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(cfg);
  snap->generation = ++generation_;
  snap->rollback = rollback_.active;
  snap->rollback_since_ms = rollback_.since_s * 1000;
  snap->metrics = metrics_->forConfig(*snap->config);
  snap->stats = stats_->forConfig(*snap->config);
  if (dns_) snap->dns_nudge = dns_->nudge();
  snap->listener_tls = tls_;
  snap->backend_tls = backend_tls_;
  if (metrics_->enabled()) snap->tls_metrics = tls_metrics_->forConfig(*snap->config);
  for (const std::string& name : snap->config->filters) {
    if (name == "router") continue;
    auto f = makeFilterFactory(name, *snap->config, *state_, SteadyClock::instance());
    if (f) snap->filters.push_back(std::move(f));
  }
  for (size_t b = 0; b < snap->config->backends.size(); ++b) {
    const config::Backend& be = snap->config->backends[b];
    BackendRuntime rt;
    if (be.circuit_breaker.enabled) {
      rt.breaker = state_->breaker(be.name, be.circuit_breaker);
      std::string name = be.name;
      BackendMetrics bm = snap->metrics ? snap->metrics->backends[b] : BackendMetrics{};
      rt.breaker->setListener([name, bm](BreakerState from, BreakerState to, std::string_view why) {
        if (bm.breaker_state != nullptr) bm.onBreakerTransition(to);
        log::Level level = to == BreakerState::Open ? log::Level::Warn : log::Level::Info;
        log::events().write(level, "breaker_transition",
                            {{"backend", name},
                             {"from", breakerStateName(from)},
                             {"to", breakerStateName(to)},
                             {"reason", why}});
      });
    }
    rt.limits = state_->concurrency(be.name, be.circuit_breaker);
    rt.budget = state_->retryBudget(be.name);
    if (be.health_check.enabled) {
      std::vector<std::string> eps;
      for (const auto& e : be.endpoints) eps.push_back(e.text);
      rt.health = state_->health(be.name, eps, be.health_check);
    }
    if (be.rate_limit) rt.limiter = state_->backendLimiter(be.name, *be.rate_limit);
    snap->backends.push_back(std::move(rt));
  }
  return snap;
}

std::shared_ptr<const config::Config> Server::effective(
    std::shared_ptr<const config::Config> file) const {
  return rollback_.active ? withRollback(*file) : file;
}

// ---- listeners ------------------------------------------------------------------------------

int Server::bindListener(const config::Listener& l, uint32_t workers, BoundListener& out) {
  out.name = l.name;
  out.address = l.address.text;
  sockaddr_storage addr = l.address.addr;
  socklen_t len = l.address.len;
  if (!portIsFree(addr, len)) return -EADDRINUSE;
  for (uint32_t i = 0; i < workers; ++i) {
    int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    // Listening from here on, so connections queue before the worker adopts the socket.
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4096) != 0) {
      int err = errno;
      ::close(fd);
      for (int f : out.fds) ::close(f);
      out.fds.clear();
      return -err;
    }
    if (i == 0) {
      // Port 0: every further worker socket binds the port the kernel chose for the first.
      socklen_t alen = sizeof(addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen);
      len = alen;
      char host[INET6_ADDRSTRLEN] = {0};
      if (addr.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&addr);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        out.bound = std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
      } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        out.bound = "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
      }
    }
    out.fds.push_back(fd);
  }
  return 0;
}

void Server::startListener(BoundListener& b) {
  for (size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->addListener(b.name, b.fds[i]);
    log::info("listening", {{"listener", b.name}, {"address", b.bound}, {"worker", i}});
  }
}

// ---- startup --------------------------------------------------------------------------------

int Server::run() {
  uv_loop_init(&loop_);
  // The watch starts before the file is first read, so an edit made during startup is seen: its
  // event is handled once the loop runs, and compared with the contents loaded here.
  watcher_ = std::make_unique<ConfigWatcher>(
      &loop_, config_path_,
      [this](std::string contents) {
        // Zero bytes: an in-place writer has truncated the file and not yet written it. Not a
        // config anyone means; the write's own event brings the real contents.
        if (contents.empty()) {
          log::info("config_file_empty", {{"file", config_path_}, {"action", "waiting"}});
          return;
        }
        loadThenApply(std::move(contents), "file_change", {});
      },
      [](int uv_err, const std::string& what) {
        log::warn("config_watch_error", {{"error", readErrorText(uv_err)}, {"what", what}});
      });
  if (int rc = watcher_->start(); rc != 0) {
    log::warn("config_watch_error", {{"error", uv_strerror(rc)}, {"what", config_path_}});
  }
  auto failEarly = [this] {
    watcher_->close([] {});
    if (dns_) dns_->close();  // created once the config loaded
    for (auto& [path, w] : tls_watchers_) w->close([] {});
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return 1;
  };

  // Blocking, before the loop runs; a FIFO or device at the path is refused without waiting.
  std::string text, err;
  config::LoadResult res;
  if (!config::readRegularFile(config_path_, config::kMaxConfigFileBytes, text, err)) {
    res.errors.push_back({config_path_, 0, 0, "", "cannot read the file: " + err});
  } else {
    watcher_->prime(text);
    res = config::loadString(text, config_path_);
    tls_ = loadTls(res, backend_tls_);
  }
  if (!res.ok()) {
    for (const auto& e : res.errors) log::error("config_error", {{"error", e.str()}});
    // A restart must not crash-loop on a broken file when a good one is remembered.
    res = loadLastGood(text);
    tls_ = loadTls(res, backend_tls_);
    if (!res.ok()) {
      for (const auto& e : res.errors) log::error("config_error", {{"error", e.str()}});
      return failEarly();
    }
  } else {
    openStateDir(res.config->state_dir);
  }
  file_config_ = res.config;
  const config::Config& cfg = *file_config_;
  metrics_ = std::make_unique<Metrics>(CUTOVER_VERSION, cfg.metrics_enabled);
  stats_ = std::make_unique<Stats>();
  state_ = std::make_unique<StateStore>();
  tls_metrics_ = std::make_unique<TlsMetrics>(metrics_->registry());
  tls_metrics_->setCertificates(*file_config_, tls_);
  watchTlsFiles();
  // Lookups start now, on the thread pool; their answers arrive once the loop runs.
  dns_ = std::make_unique<DnsResolver>(&loop_, metrics_->registry(), [this] { onDnsChange(); });
  dns_->track(*file_config_);
  snapshot_ = buildSnapshot(effective(withResolvedEndpoints(file_config_, dns_->resolved())));
  loaded_at_ms_ = wallClockMs();
  metrics_->setConfigInfo(cfg, snapshot_->generation);
  metrics_->setWeights(*file_config_, *snapshot_->config, rollback_.active);
  metrics_->setRollback(rollback_.active, rollback_.since_s);
  metrics_->setLastLoadSuccess(!from_last_good_);
  if (!from_last_good_) rememberGood(cfg, std::move(text));

  access_sink_ = AccessLogSink::open(cfg.access_log.path, err);
  if (!access_sink_) {
    log::error("access_log_error", {{"path", cfg.access_log.path}, {"error", err}});
    return failEarly();
  }

  // Signals first: a SIGTERM right after "listening" must drain, not kill.
  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sighup_);
  sigterm_.data = sigint_.data = sighup_.data = this;
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_start(&sighup_, onSignal, SIGHUP);
  uv_timer_init(&loop_, &check_);
  uv_timer_init(&loop_, &drain_deadline_);
  uv_timer_init(&loop_, &drain_delay_);
  check_.data = drain_deadline_.data = drain_delay_.data = this;

  // Every socket is bound before any worker starts: a port in use ends the start cleanly, with
  // every handle closed through its close callback (the admin server included) before returning.
  auto failStartup = [this] {
    for (auto& bl : listeners_) {
      for (int fd : bl.fds) ::close(fd);
    }
    listeners_.clear();
    closeMainHandles();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    log::error("start_failed", {{"config", config_path_}});
    return 1;
  };
  for (const config::Listener& l : cfg.listeners) {
    BoundListener b;
    int rc = bindListener(l, cfg.workers, b);
    if (rc != 0) {
      log::error("listen_failed",
                 {{"listener", l.name}, {"address", l.address.text}, {"error", strerror(-rc)}});
      return failStartup();
    }
    listeners_.push_back(std::move(b));
  }
  if (!startAdmin()) return failStartup();

  for (uint32_t i = 0; i < cfg.workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, snapshot_, access_sink_));
  }
  for (auto& w : workers_) w->start();
  for (auto& bl : listeners_) startListener(bl);

  health_ = std::make_unique<HealthChecker>(&loop_);
  health_->update(*snapshot_);
  if (cfg.fleet.enabled) startFleet();
  ready_ = true;
  log::info("started", {{"workers", cfg.workers},
                        {"config", config_path_},
                        {"generation", snapshot_->generation},
                        {"hash", cfg.hash},
                        {"version", CUTOVER_VERSION}});

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  workers_.clear();
  uv_loop_close(&loop_);
  log::info("stopped");
  return 0;
}

bool Server::startAdmin() {
  const config::Config& cfg = *file_config_;
  if (!cfg.admin.enabled) return true;
  admin_token_ = cfg.admin.token;  // checked at load: set whenever a source is configured
  if (admin_token_.empty() && !isLoopback(cfg.admin.address)) {
    log::warn("admin_unprotected",
              {{"address", cfg.admin.address.text},
               {"why",
                "admin.allow_unauthenticated: mutations are open to anyone who can reach "
                "this address"}});
  }
  admin_ = std::make_unique<AdminServer>(
      &loop_, cfg.admin.address,
      [this](const AdminRequest& req, AdminResponder res) { handleAdmin(req, std::move(res)); });
  std::string bound;
  int rc = admin_->start(bound);
  if (rc != 0) {
    // The server is closed (and freed by ~Server) after its close callbacks: see failStartup.
    log::error("admin_listen_failed",
               {{"address", cfg.admin.address.text}, {"error", uv_strerror(rc)}});
    return false;
  }
  log::info("admin_listening", {{"address", bound}});
  return true;
}

// ---- reload and rollback --------------------------------------------------------------------

void Server::reload(const char* trigger, std::function<void(const ReloadResult&)> done) {
  if (!watcher_) {
    ReloadResult r;
    r.errors.push_back("not running");
    done(r);
    return;
  }
  std::string why = trigger;
  watcher_->readNow([this, why, done = std::move(done)](int err, std::string contents) {
    if (err == 0) {
      loadThenApply(std::move(contents), why, done);
      return;
    }
    ReloadResult r;
    r.errors.push_back(config_path_ + ": cannot read the file: " + readErrorText(err));
    last_reload_error_ = r.errors.back();
    metrics_->onReloadResult(false);
    log::error("config_reload_rejected", {{"trigger", why}, {"error", r.errors.back()}});
    if (done) done(r);
  });
}

// One parse on libuv's thread pool: loadString reads the admin token file and parses YAML, neither
// of which belongs on the main loop. Loads run one at a time in the order they were asked for, so
// an older file can never be applied after a newer one.
struct Server::PendingLoad {
  Server* server = nullptr;
  uv_work_t work{};
  std::string text;
  std::string path;
  std::string trigger;
  std::function<void(const ReloadResult&)> done;
  config::LoadResult result;
  ListenerTlsContexts tls;
  BackendTlsContexts backend_tls;
};

void Server::loadThenApply(std::string text, std::string trigger,
                           std::function<void(const ReloadResult&)> done) {
  auto load = std::make_unique<PendingLoad>();
  load->server = this;
  load->work.data = load.get();
  load->text = std::move(text);
  load->path = config_path_;
  load->trigger = std::move(trigger);
  load->done = std::move(done);
  loads_.push_back(std::move(load));
  startNextLoad();
}

void Server::startNextLoad() {
  if (load_in_flight_ || loads_.empty()) return;
  load_in_flight_ = true;
  const int rc = uv_queue_work(
      &loop_, &loads_.front()->work,
      [](uv_work_t* w) {
        auto* load = static_cast<PendingLoad*>(w->data);
        load->result = config::loadString(load->text, load->path);
        load->tls =
            load->server->loadTls(load->result, load->backend_tls);  // reads certificate files
      },
      [](uv_work_t* w, int status) {
        Server* self = static_cast<PendingLoad*>(w->data)->server;
        std::unique_ptr<PendingLoad> load = std::move(self->loads_.front());
        self->loads_.pop_front();
        self->load_in_flight_ = false;
        if (status != 0) load->result.errors.push_back({"", 0, 0, "", "reload cancelled"});
        ReloadResult r =
            self->applyLoaded(std::move(load->result), std::move(load->text), load->trigger.c_str(),
                              std::move(load->tls), std::move(load->backend_tls));
        if (load->done) load->done(r);
        self->startNextLoad();
      });
  if (rc != 0) {
    // Not expected (uv_queue_work fails only without a work callback): parse here instead.
    std::unique_ptr<PendingLoad> load = std::move(loads_.front());
    loads_.pop_front();
    load_in_flight_ = false;
    config::LoadResult res = config::loadString(load->text, load->path);
    BackendTlsContexts backend_tls;
    ListenerTlsContexts tls = loadTls(res, backend_tls);
    ReloadResult r = applyLoaded(std::move(res), std::move(load->text), load->trigger.c_str(),
                                 std::move(tls), std::move(backend_tls));
    if (load->done) load->done(r);
    startNextLoad();
  }
}

ListenerTlsContexts Server::loadTls(config::LoadResult& res,
                                    BackendTlsContexts& backend_tls) const {
  backend_tls.clear();
  if (!res.ok()) return {};
  std::vector<config::Error> errors;
  ListenerTlsContexts tls = buildListenerTls(*res.config, config_path_, ticket_keys_, errors);
  backend_tls = buildBackendTls(*res.config, config_path_, errors);
  if (errors.empty()) return tls;
  backend_tls.clear();
  for (auto& e : errors) res.errors.push_back(std::move(e));
  res.config = nullptr;
  return {};
}

void Server::watchTlsFiles() {
  std::vector<std::string> files = listenerTlsFiles(*file_config_);
  for (std::string& f : backendTlsFiles(*file_config_)) files.push_back(std::move(f));
  for (const std::string& path : files) {
    if (tls_watchers_.count(path) != 0) continue;
    // Kubernetes secrets and cert-manager swap the `..data` symlink; ConfigWatcher handles that
    // and debounces. A change re-reads the whole config: the new snapshot gets new contexts.
    auto w = std::make_unique<ConfigWatcher>(
        &loop_, path, [this](std::string) { reload("tls_file_change", {}); },
        [path](int uv_err, const std::string&) {
          log::warn("tls_watch_error", {{"file", path}, {"error", readErrorText(uv_err)}});
        });
    if (int rc = w->start(); rc != 0) {
      log::warn("tls_watch_error", {{"file", path}, {"error", uv_strerror(rc)}});
      w->close([] {});
    }
    tls_watchers_.emplace(path, std::move(w));
  }
}

Server::ReloadResult Server::applyLoaded(config::LoadResult res, std::string text,
                                         const char* trigger, ListenerTlsContexts tls,
                                         BackendTlsContexts backend_tls) {
  ReloadResult r;
  if (draining_) {
    r.errors.push_back("draining: reload ignored");
    return r;
  }
  if (!res.ok()) {
    std::string joined;
    for (const auto& e : res.errors) {
      r.errors.push_back(e.str());
      joined += (joined.empty() ? "" : "\n") + e.str();
      log::error("config_reload_rejected", {{"trigger", trigger}, {"error", e.str()}});
    }
    last_reload_error_ = joined;
    metrics_->onReloadResult(false);
    metrics_->setLastLoadSuccess(false);
    return r;
  }
  r.ok = true;
  r.changes = describeChanges(*file_config_, *res.config);
  r.changed = res.config->hash != file_config_->hash;
  if (res.config->workers != file_config_->workers) {
    log::warn(
        "config_needs_restart",
        {{"key", "workers"}, {"running", file_config_->workers}, {"file", res.config->workers}});
  }
  if (res.config->admin.address.text != file_config_->admin.address.text ||
      res.config->admin.enabled != file_config_->admin.enabled) {
    log::warn("config_needs_restart", {{"key", "admin"}});
  }
  if (res.config->state_dir != file_config_->state_dir) {
    log::warn("config_needs_restart", {{"key", "state_dir"}});
  }
  if (!(res.config->fleet == file_config_->fleet)) {
    log::warn("config_needs_restart", {{"key", "fleet"}});
  }
  if (res.config->admin.token != admin_token_ && admin_) {
    admin_token_ = res.config->admin.token;  // a rotated token file or secret takes effect now
    log::info("admin_token_changed", {{"trigger", trigger}});
  }
  tls_ = std::move(tls);
  backend_tls_ = std::move(backend_tls);
  swapIn(res.config);
  tls_metrics_->setCertificates(*file_config_, tls_);
  watchTlsFiles();
  last_reload_error_.clear();
  from_last_good_ = false;
  metrics_->onReloadResult(true);
  metrics_->setLastLoadSuccess(true);
  rememberGood(*file_config_, std::move(text));
  std::string summary;
  for (const auto& c : r.changes) summary += (summary.empty() ? "" : "; ") + c;
  if (rollback_.active) {
    // The file's weights are kept underneath; requests stay on the stable backends until cleared.
    log::warn("config_reloaded", {{"trigger", trigger},
                                  {"generation", snapshot_->generation},
                                  {"hash", file_config_->hash},
                                  {"changes", summary.empty() ? "none" : summary},
                                  {"rollback", "applied under active rollback"}});
  } else {
    log::info("config_reloaded", {{"trigger", trigger},
                                  {"generation", snapshot_->generation},
                                  {"hash", file_config_->hash},
                                  {"changes", summary.empty() ? "none" : summary}});
  }
  return r;
}

void Server::swapIn(std::shared_ptr<const config::Config> file_cfg) {
  std::shared_ptr<const config::Config> old_file = file_config_;
  file_config_ = std::move(file_cfg);
  if (dns_) dns_->track(*file_config_);  // names added or removed; unchanged ones keep their sets
  auto snap = buildSnapshot(
      effective(dns_ ? withResolvedEndpoints(file_config_, dns_->resolved()) : file_config_));
  const config::Config& cfg = *snap->config;

  // Listeners: start the added ones before the swap, stop the removed ones after.
  std::vector<BoundListener> keep;
  std::vector<std::string> removed;
  for (auto& bl : listeners_) {
    bool still = false;
    for (const auto& l : cfg.listeners)
      still = still || (l.name == bl.name && l.address.text == bl.address);
    if (still) {
      keep.push_back(std::move(bl));
    } else {
      removed.push_back(bl.name);
    }
  }
  for (const auto& l : cfg.listeners) {
    bool have = false;
    for (const auto& bl : keep) have = have || (bl.name == l.name && bl.address == l.address.text);
    if (have) continue;
    BoundListener b;
    int rc = bindListener(l, static_cast<uint32_t>(workers_.size()), b);
    if (rc != 0) {
      log::error("listen_failed",
                 {{"listener", l.name}, {"address", l.address.text}, {"error", strerror(-rc)}});
      continue;
    }
    startListener(b);
    keep.push_back(std::move(b));
  }
  listeners_ = std::move(keep);

  snapshot_ = snap;
  loaded_at_ms_ = wallClockMs();
  for (auto& w : workers_) w->setSnapshot(snapshot_);
  for (const std::string& name : removed) {
    for (auto& w : workers_) w->removeListener(name);
    log::info("listener_removed", {{"listener", name}});
  }
  if (health_) health_->update(*snapshot_);
  state_->sweep();
  metrics_->setWeights(*file_config_, *snapshot_->config, rollback_.active);
  metrics_->setRollback(rollback_.active, rollback_.since_s);
  metrics_->setConfigInfo(*file_config_, snapshot_->generation);
}

bool Server::rollback(const RollbackRequest& req, StateDir::Done persisted) {
  if (rollback_.active || draining_) return false;
  rollback_.active = true;
  rollback_.since_s = wallClockMs() / 1000;
  rollback_.actor = req.actor.empty() ? "admin" : req.actor;
  rollback_.reason = req.reason;
  swapIn(file_config_);
  log::warn("rollback", {{"trigger", rollback_.actor},
                         {"reason", rollback_.reason},
                         {"since", rollback_.since_s},
                         {"generation", snapshot_->generation}});
  persistRollback(std::move(persisted));
  if (fleet_) fleet_->publishRollback(rollback_);
  return true;
}

bool Server::clearRollback(const char* trigger, StateDir::Done persisted) {
  if (!rollback_.active || draining_) return false;
  rollback_ = RollbackState{};
  swapIn(file_config_);
  log::info("rollback_cleared", {{"trigger", trigger}, {"generation", snapshot_->generation}});
  persistRollback(std::move(persisted));
  if (fleet_) fleet_->publishRollback(rollback_);
  return true;
}

// ---- fleet ------------------------------------------------------------------------------------

void Server::startFleet() {
  Fleet::Hooks hooks;
  hooks.apply_rollback = [this](const RollbackState& s) { applyFleetRollback(s); };
  hooks.local_rollback = [this] { return rollback_; };
  hooks.record = [this] { return fleetRecord(); };
  fleet_ =
      std::make_unique<Fleet>(&loop_, file_config_->fleet, metrics_->registry(), std::move(hooks));
  fleet_->start();
}

void Server::applyFleetRollback(const RollbackState& state) {
  if (draining_ || state.active == rollback_.active) return;
  if (state.active) {
    rollback_ = state;
    swapIn(file_config_);
    log::warn("rollback", {{"trigger", "fleet"},
                           {"origin", rollback_.origin},
                           {"actor", rollback_.actor},
                           {"reason", rollback_.reason},
                           {"since", rollback_.since_s},
                           {"generation", snapshot_->generation}});
  } else {
    const std::string origin = state.origin;
    rollback_ = RollbackState{};
    swapIn(file_config_);
    log::info("rollback_cleared",
              {{"trigger", "fleet"}, {"origin", origin}, {"generation", snapshot_->generation}});
  }
  persistRollback({});
}

ReplicaRecord Server::fleetRecord() const {
  ReplicaRecord r;
  r.config_hash = file_config_->hash;
  r.rollback = rollback_.active;
  r.admin = file_config_->admin.address.text;
  r.started_ms = loaded_at_ms_;
  const config::Config& cfg = *snapshot_->config;
  for (const config::Route& route : cfg.routes) {
    if (r.weights.size() > 2000) {
      r.weights += "...";
      break;
    }
    if (!r.weights.empty()) r.weights += "; ";
    r.weights += route.name;
    for (const config::SplitEntry& e : route.split) {
      r.weights += " " + cfg.backends[e.backend].name + "=" + std::to_string(e.weight);
    }
  }
  return r;
}

void Server::closeTunnelsOffStable() {
  for (auto& w : workers_) w->closeTunnelsOffStable();
}

// ---- state dir --------------------------------------------------------------------------------

void Server::openStateDir(const std::string& configured) {
  const std::string& dir = state_dir_flag_.empty() ? configured : state_dir_flag_;
  if (dir.empty()) return;
  auto sd = std::make_unique<StateDir>(&loop_, dir);
  std::string err;
  if (!sd->prepare(err)) {
    // Running without persistence beats not running; said loudly and shown in /config.
    state_dir_error_ = err;
    log::error("state_dir_error", {{"state_dir", dir}, {"error", err}});
    return;
  }
  RollbackState saved;
  if (sd->readRollback(saved, err) && saved.active) {
    rollback_ = saved;
    log::warn("rollback_restored", {{"state_dir", dir},
                                    {"since", saved.since_s},
                                    {"actor", saved.actor},
                                    {"reason", saved.reason}});
  } else if (!err.empty()) {
    state_dir_error_ = err;
    log::error("state_dir_error", {{"state_dir", dir}, {"error", err}});
  }
  state_dir_ = std::move(sd);
}

config::LoadResult Server::loadLastGood(const std::string& file_text) {
  config::LoadResult none;
  openStateDir(scanStateDir(file_text));
  std::string text, err;
  if (state_dir_ == nullptr || !state_dir_->readLastGood(text, err)) {
    log::error("config_no_last_good",
               {{"state_dir", state_dir_ ? state_dir_->dir() : std::string()},
                {"error", err.empty() ? "no last-known-good config persisted" : err}});
    return none;
  }
  config::LoadResult res = config::loadString(text, state_dir_->path(StateDir::kLastGoodFile));
  if (!res.ok()) {
    for (const auto& e : res.errors) log::error("config_error", {{"error", e.str()}});
    return none;
  }
  from_last_good_ = true;
  last_good_hash_ = res.config->hash;
  last_reload_error_ = config_path_ + ": does not load; running on the last-known-good " +
                       state_dir_->path(StateDir::kLastGoodFile) + " (hash " + res.config->hash +
                       ")";
  log::error("config_started_from_last_good",
             {{"file", config_path_},
              {"last_good", state_dir_->path(StateDir::kLastGoodFile)},
              {"hash", res.config->hash}});
  return res;
}

void Server::persistRollback(StateDir::Done done) {
  if (state_dir_ == nullptr) {
    if (done) done(false, "");
    return;
  }
  state_dir_->writeRollback(rollback_, [done = std::move(done)](bool ok, const std::string& err) {
    if (!ok) log::error("state_write_failed", {{"file", "rollback"}, {"error", err}});
    if (done) done(ok, err);
  });
}

void Server::rememberGood(const config::Config& cfg, std::string text) {
  if (state_dir_ == nullptr || cfg.hash == last_good_hash_) return;
  last_good_hash_ = cfg.hash;
  state_dir_->writeLastGood(std::move(text), [](bool ok, const std::string& err) {
    if (!ok) log::error("state_write_failed", {{"file", "last_good"}, {"error", err}});
  });
}

// ---- views for the admin API ----------------------------------------------------------------

std::string Server::configYaml() const {
  std::string out = "# cutover effective config\n";
  out += "generation: " + std::to_string(snapshot_->generation) + "\n";
  out += "hash: \"" + file_config_->hash + "\"\n";
  std::string ts;
  appendJsonTimestamp(ts, loaded_at_ms_);
  out += "loaded_at: " + ts + "\n";
  out += "file: \"" + config_path_ + "\"\n";
  out += std::string("rollback_active: ") + (rollback_.active ? "true" : "false") + "\n";
  if (rollback_.active) {
    std::string since;
    appendJsonTimestamp(since, rollback_.since_s * 1000);
    out = "# ROLLBACK ACTIVE since " + since.substr(1, since.size() - 2) + "\n" + out;
    out += "rollback_since: " + since + "\n";
    std::string actor, reason;
    appendJsonString(actor, rollback_.actor);
    appendJsonString(reason, rollback_.reason);
    out += "rollback_actor: " + actor + "\n";
    out += "rollback_reason: " + reason + "\n";
    out += std::string("rollback_source: ") + (rollback_.origin.empty() ? "local" : "fleet") + "\n";
    if (!rollback_.origin.empty()) {
      std::string origin;
      appendJsonString(origin, rollback_.origin);
      out += "rollback_origin: " + origin + "\n";
    }
  }
  if (fleet_) {
    std::string id;
    appendJsonString(id, fleet_->replicaId());
    out += "fleet_replica_id: " + id + "\n";
    out += std::string("fleet_redis_up: ") + (fleet_->redisUp() ? "true" : "false") + "\n";
  }
  out += std::string("running_from: ") + (from_last_good_ ? "last_known_good" : "file") + "\n";
  if (state_dir_ != nullptr) {
    std::string dir;
    appendJsonString(dir, state_dir_->dir());
    out += "state_dir: " + dir + "\n";
  } else {
    out += "state_dir: null\n";
  }
  if (!state_dir_error_.empty()) {
    std::string e;
    appendJsonString(e, state_dir_error_);
    out += "state_dir_error: " + e + "\n";
  }
  if (last_reload_error_.empty()) {
    out += "last_reload_error: null\n";
  } else {
    out += "last_reload_error: |\n";
    std::istringstream lines(last_reload_error_);
    for (std::string line; std::getline(lines, line);) out += "  " + line + "\n";
  }
  out += "config:\n";
  std::istringstream dump(config::dumpYaml(*snapshot_->config));
  for (std::string line; std::getline(dump, line);) out += "  " + line + "\n";
  return out;
}

std::string Server::statsJson() const {
  std::string out = stats_->json(*snapshot_, monotonicNs());
  if (dns_ && !out.empty() && out.back() == '}') {
    out.pop_back();
    out += ",\"dns\":";
    dns_->appendJson(out);
    out += "}";
  }
  if (!out.empty() && out.back() == '}') {
    out.pop_back();
    out += ",\"rollback_source\":";
    if (!rollback_.active) {
      out += "null";
    } else {
      out += rollback_.origin.empty() ? "\"local\"" : "\"fleet\"";
      out += ",\"rollback_origin\":";
      appendJsonString(out, rollback_.origin);
    }
    out += ",\"fleet\":";
    if (fleet_) {
      fleet_->appendJson(out);
    } else {
      out += "null";
    }
    out += "}";
  }
  return out;
}

void Server::resetStats() { stats_->reset(); }

std::string Server::metricsText() const {
  // Gauges read at scrape time rather than kept current on the hot path.
  const config::Config& cfg = *snapshot_->config;
  if (snapshot_->metrics) {
    for (size_t b = 0; b < cfg.backends.size(); ++b) {
      const auto& breaker = snapshot_->backends[b].breaker;
      auto* g = snapshot_->metrics->backends[b].breaker_state;
      if (g == nullptr) continue;
      BreakerState s = breaker ? breaker->state(monotonicNs()) : BreakerState::Closed;
      g->Set(s == BreakerState::Open ? 2 : s == BreakerState::HalfOpen ? 1 : 0);
    }
  }
  std::vector<std::vector<bool>> healthy(cfg.backends.size());
  for (size_t b = 0; b < cfg.backends.size(); ++b) {
    const auto& h = snapshot_->backends[b].health;
    for (size_t e = 0; e < cfg.backends[b].endpoints.size(); ++e) {
      healthy[b].push_back(!h || e >= h->size() || h->healthy(e));
    }
  }
  metrics_->setEndpointHealth(cfg, healthy);
  if (access_sink_) metrics_->setAccessLogDropped(access_sink_->dropped());
  return metrics_->serialize();
}

// ---- signals and drain ----------------------------------------------------------------------

void Server::onSignal(uv_signal_t* s, int signum) {
  auto* self = static_cast<Server*>(s->data);
  if (signum == SIGHUP) {
    self->reload("SIGHUP", [](const ReloadResult&) {});
    return;
  }
  const char* name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
  if (self->drain_signalled_) {
    self->forceStop(name);  // the operator asked twice: no more waiting
    return;
  }
  // Only a second signal forces: Kubernetes' SIGTERM after a preStop `POST /drain` is the first
  // signal, and the drain that call started goes on.
  self->drain_signalled_ = true;
  if (self->draining_) {
    log::info("drain_signal", {{"why", name}, {"action", "drain already running"}});
    return;
  }
  self->startDrain(name);
}

size_t Server::openConnections() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->openConnections();
  return n;
}

void Server::startDrain(const char* why, int64_t delay_ms) {
  if (draining_) return;
  draining_ = true;  // /ready answers 503 from now on
  drain_phase_ = 1;
  drain_started_ms_ = uv_now(&loop_);
  const config::Config& cfg = *snapshot_->config;
  const uint64_t delay = delay_ms >= 0 ? static_cast<uint64_t>(delay_ms)
                                       : static_cast<uint64_t>(cfg.timeouts.drain_delay.count());
  metrics_->setDrainPhase(1);
  log::info("drain_started", {{"why", why},
                              {"phase", 1},
                              {"delay_ms", delay},
                              {"timeout_ms", cfg.timeouts.drain.count()},
                              {"connections", openConnections()}});
  uv_timer_start(&check_, onCheck, 20, 20);
  if (delay == 0) {
    stopAccepting();
    return;
  }
  // Load balancers still send new connections here until the endpoint removal reaches them: keep
  // accepting and serving, one request per connection, so none is refused.
  for (auto& w : workers_) w->drain();
  uv_timer_start(&drain_delay_, onDrainDelay, delay, 0);
}

void Server::onDrainDelay(uv_timer_t* t) { static_cast<Server*>(t->data)->stopAccepting(); }

void Server::stopAccepting() {
  if (drain_phase_ >= 2) return;
  drain_phase_ = 2;
  const config::Config& cfg = *snapshot_->config;
  metrics_->setDrainPhase(2);
  log::info("drain_listeners_closed", {{"phase", 2},
                                       {"after_ms", uv_now(&loop_) - drain_started_ms_},
                                       {"timeout_ms", cfg.timeouts.drain.count()},
                                       {"connections", openConnections()}});
  for (auto& w : workers_) w->stopAccepting();
  if (health_) health_->stop();
  uv_timer_start(&drain_deadline_, onDrainDeadline,
                 static_cast<uint64_t>(cfg.timeouts.drain.count()), 0);
}

void Server::forceStop(const char* why) {
  if (drain_forced_) return;
  drain_forced_ = true;
  log::warn("drain_forced", {{"why", why},
                             {"phase", drain_phase_},
                             {"after_ms", uv_now(&loop_) - drain_started_ms_},
                             {"connections", openConnections()}});
  drain_phase_ = 2;
  metrics_->setDrainPhase(2);
  uv_timer_stop(&drain_delay_);
  uv_timer_stop(&drain_deadline_);
  if (health_) health_->stop();
  for (auto& w : workers_) w->stopNow(true);
}

void Server::onCheck(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  for (auto& w : self->workers_) {
    if (!w->finished()) return;
  }
  log::info("drained", {{"after_ms", uv_now(&self->loop_) - self->drain_started_ms_}});
  self->closeMainHandles();
}

void Server::closeMainHandles() {
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&check_), reinterpret_cast<uv_handle_t*>(&drain_deadline_),
        reinterpret_cast<uv_handle_t*>(&drain_delay_), reinterpret_cast<uv_handle_t*>(&sigterm_),
        reinterpret_cast<uv_handle_t*>(&sigint_), reinterpret_cast<uv_handle_t*>(&sighup_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
  if (admin_) admin_->close([] {});
  if (watcher_) watcher_->close([] {});
  if (dns_) dns_->close();
  for (auto& [path, w] : tls_watchers_) w->close([] {});
  if (fleet_) fleet_->close([] {});
}

// With a fleet, not before the fleet rollback was read once: a replica that starts during a
// fleet rollback never serves the file's weights.
bool Server::ready() const {
  return ready_ && !draining_ && (!dns_ || dns_->settled()) && (!fleet_ || fleet_->settled());
}

void Server::onDnsChange() {
  if (draining_ || !file_config_) return;
  swapIn(file_config_);
  log::info("dns_snapshot", {{"generation", snapshot_->generation}});
}

void Server::onDrainDeadline(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  log::warn("drain_timeout", {{"connections", self->openConnections()}});
  for (auto& w : self->workers_) w->stopNow(false);
}

}  // namespace cutover
