// The main thread: owns the running snapshot, the listening sockets, the workers, signals, the
// admin listener, health checks and config reloads. Workers never call into it on the hot path;
// it talks to them through Worker::post().
//
// Reload (file change, SIGHUP, POST /reload):
//   read file (async) ─▶ parse, validate, read the token file (thread pool, in order)
//                      ─▶ invalid: log file:line:key, count rejected, keep
//                      └▶ valid: build snapshot (state carried by name)
//                           ─▶ start added listeners ─▶ swap into workers
//                           ─▶ stop removed listeners ─▶ log the diff
//
// Rollback (POST /rollback) is server state, not file state: every snapshot is built from the
// file's config and, while a rollback is active, rewritten so each route sends 100% to its stable
// backend (withRollback). A reload therefore applies underneath and the rollback holds until
// cleared. With a state dir (StateDir) the rollback and the last config text that loaded are
// persisted; at start a persisted rollback is restored, and a file that does not load is replaced
// by that last-known-good (logged as an error) instead of ending the process.
// Drain (SIGTERM, SIGINT, POST /drain), two phases as Envoy's drain_listeners?graceful:
//   running ─▶ 1 accepting (timeouts.drain_delay): /ready 503, every answer Connection: close,
//   │          idle keep-alive connections closed between requests, new connections served
//   │       ─▶ 2 listeners closed (up to timeouts.drain): in-flight requests finish; tunnels are
//   │          closed (FIN both sides) once nothing else is in flight; exit 0 when empty
//   │       ─▶ deadline: what is left is cut (reason draining), exit 0
//   └─ a second SIGTERM/SIGINT: everything is cut now, exit 0 (after POST /drain, the first
//      signal does not force: it is Kubernetes' SIGTERM following a preStop hook)
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/loader.h"
#include "proxy/backend_tls.h"
#include "proxy/listener_tls.h"
#include "proxy/snapshot.h"
#include "proxy/state_dir.h"

namespace cutover {

class Worker;
class StateStore;
class HealthChecker;
class Metrics;
class Stats;
class AdminServer;
class ConfigWatcher;
class AccessLogSink;
struct AdminRequest;
class AdminResponder;
class DnsResolver;
class TlsMetrics;
class Fleet;
struct ReplicaRecord;

class Server {
 public:
  // `state_dir` (the --state-dir flag) wins over the config's `state_dir:`.
  explicit Server(std::string config_path, std::string state_dir = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the config, binds, starts the workers and runs until drained. Returns the exit code.
  int run();

  // ---- for the admin API (main thread) ----
  struct ReloadResult {
    bool ok = false;
    bool changed = false;
    std::vector<std::string> errors;   // file:line:col: path: message
    std::vector<std::string> changes;  // "route kibana: new 10% -> 25%"
  };
  // Re-reads the config file (asynchronously) and applies it; `done` runs once, later.
  void reload(const char* trigger, std::function<void(const ReloadResult&)> done);
  // Every route 100% to its stable backend, in memory, at once, and kept (across reloads and, with
  // a state dir, restarts) until cleared. Returns false (and never calls `persisted`) if already
  // active, or draining. Else `persisted` runs once: after the state is durable in the state dir,
  // or failed to be (later), or at once (ok = false, empty error) when there is no state dir.
  struct RollbackRequest {
    std::string actor;
    std::string reason;
  };
  bool rollback(const RollbackRequest& req, StateDir::Done persisted);
  bool clearRollback(const char* trigger, StateDir::Done persisted);
  const RollbackState& rollbackState() const { return rollback_; }
  bool persistent() const { return state_dir_ != nullptr; }
  // Fleet mode: a rollback change posted to another replica (active = false: cleared).
  void applyFleetRollback(const RollbackState& state);
  // Closes every open upgrade tunnel whose backend is not its route's stable one (each worker,
  // soon; each logs what it closed).
  void closeTunnelsOffStable();
  // Starts the drain; `delay_ms` < 0 uses timeouts.drain_delay. A no-op when already draining.
  void startDrain(const char* why, int64_t delay_ms = -1);
  // Started, not draining, and every backend DNS name has had its first answer.
  bool ready() const;
  const std::shared_ptr<const Snapshot>& snapshot() const { return snapshot_; }
  std::string configYaml() const;
  std::string statsJson() const;
  void resetStats();
  std::string metricsText() const;
  const std::string& adminToken() const { return admin_token_; }

 private:
  struct BoundListener {
    std::string name;
    std::string address;   // as configured
    std::string bound;     // actual address (port 0 resolved)
    std::vector<int> fds;  // one SO_REUSEPORT socket per worker
  };
  std::shared_ptr<const Snapshot> buildSnapshot(std::shared_ptr<const config::Config> cfg);
  // The config requests run on: the file's, with rollback applied when active.
  std::shared_ptr<const config::Config> effective(std::shared_ptr<const config::Config> file) const;
  struct PendingLoad;
  // Parses `text` on the thread pool, then applies it on the loop; `done` (may be empty) runs once.
  void loadThenApply(std::string text, std::string trigger,
                     std::function<void(const ReloadResult&)> done);
  void startNextLoad();
  ReloadResult applyLoaded(config::LoadResult res, std::string text, const char* trigger,
                           ListenerTlsContexts tls, BackendTlsContexts backend_tls);
  // Builds the TLS contexts of a loaded config (reads the files: startup or thread pool); errors
  // go into `res`, which then no longer holds a config.
  ListenerTlsContexts loadTls(config::LoadResult& res, BackendTlsContexts& backend_tls) const;
  // Watches every certificate, key and CA file the running config names (a change reloads).
  void watchTlsFiles();
  // Startup when the file does not load: the state dir's last-known-good, or null (logged).
  config::LoadResult loadLastGood(const std::string& file_text);
  // Opens the state dir (flag, else the config's) and restores a persisted rollback.
  void openStateDir(const std::string& configured);
  void persistRollback(StateDir::Done done);
  // Records `text` as the last config that loaded, when it differs from what is stored.
  void rememberGood(const config::Config& cfg, std::string text);
  void swapIn(std::shared_ptr<const config::Config> file_cfg);
  int bindListener(const config::Listener& l, uint32_t workers, BoundListener& out);
  void startListener(BoundListener& b);
  // Binds the admin listener; false (logged) when it cannot, e.g. the port is in use.
  bool startAdmin();
  void handleAdmin(const AdminRequest& req, AdminResponder res);
  static void onSignal(uv_signal_t* s, int signum);
  static void onCheck(uv_timer_t* t);
  static void onDrainDeadline(uv_timer_t* t);
  static void onDrainDelay(uv_timer_t* t);
  // Drain phase 2: the listeners close and the drain deadline starts.
  void stopAccepting();
  // A second SIGTERM/SIGINT while draining: cut everything and exit.
  void forceStop(const char* why);
  size_t openConnections() const;
  void closeMainHandles();
  // A DNS name's address set changed: the current file config again, with the new addresses.
  void onDnsChange();
  void startFleet();
  ReplicaRecord fleetRecord() const;

  std::string config_path_;
  uv_loop_t loop_{};
  uv_signal_t sigterm_{}, sigint_{}, sighup_{};
  uv_timer_t check_{}, drain_deadline_{}, drain_delay_{};
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<HealthChecker> health_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Stats> stats_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<ConfigWatcher> watcher_;
  std::unique_ptr<DnsResolver> dns_;  // backend endpoints given as DNS names
  std::map<std::string, std::unique_ptr<ConfigWatcher>> tls_watchers_;  // by path, never shrinks
  std::shared_ptr<TlsTicketKeys> ticket_keys_ = std::make_shared<TlsTicketKeys>();
  ListenerTlsContexts tls_;         // of file_config_
  BackendTlsContexts backend_tls_;  // of file_config_
  std::unique_ptr<TlsMetrics> tls_metrics_;
  std::unique_ptr<Fleet> fleet_;  // null without a `fleet:` section (read at start only)
  std::shared_ptr<AccessLogSink> access_sink_;
  std::shared_ptr<const config::Config> file_config_;  // as the file says
  std::shared_ptr<const Snapshot> snapshot_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<BoundListener> listeners_;
  uint64_t generation_ = 0;
  int64_t loaded_at_ms_ = 0;
  std::string last_reload_error_;
  RollbackState rollback_;
  std::string state_dir_flag_;
  std::unique_ptr<StateDir> state_dir_;  // null: nothing persisted
  std::string state_dir_error_;
  std::string last_good_hash_;   // hash of the config text last written to the state dir
  bool from_last_good_ = false;  // running on the state dir's copy: the file did not load
  std::string admin_token_;
  std::deque<std::unique_ptr<PendingLoad>> loads_;  // front is in flight when load_in_flight_
  bool load_in_flight_ = false;
  bool ready_ = false;
  bool draining_ = false;
  int drain_phase_ = 0;  // 0 running, 1 accepting, 2 listeners closed (cutover_draining)
  bool drain_forced_ = false;
  bool drain_signalled_ = false;  // a SIGTERM/SIGINT arrived: the next one forces
  uint64_t drain_started_ms_ = 0;
};

}  // namespace cutover
