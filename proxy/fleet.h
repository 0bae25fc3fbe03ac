// Fleet mode: replicas of one migration share control state and a registry through Redis
// (config `fleet:`). Absent that section nothing here exists and each process is on its own.
//
// Keys (all under fleet.key_prefix, so two migrations can share one Redis):
//   <prefix>rollback        the fleet rollback: "origin <id>\n" + rollback.state; a clear writes
//                           an inactive state whose `since` is the clear time (a tombstone)
//   <prefix>control         pub/sub channel: the same text on every rollback change
//   <prefix>replica:<id>    one replica's heartbeat record, SET with PX kReplicaTtlMs
//   <prefix>replicas        set of replica ids (stale members are removed when their key expired)
//
// Two connections on the main loop: `control` (commands) and `subscriber` (SUBSCRIBE control).
// A rollback posted to any replica is applied there at once, then written and published; every
// other replica applies it when the message arrives. On every (re)connect the key is read first
// and reconciled (reconcileRollback): a replica that missed messages catches up; a local rollback
// Redis does not know of (posted while Redis was unreachable, or Redis lost its data) is written
// to the fleet, since rolling back is the safe direction; one older than a clear is cleared.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/state_dir.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
}  // namespace prometheus

namespace cutover {

class RedisClient;

constexpr int64_t kHeartbeatIntervalMs = 1000;
constexpr int64_t kReplicaTtlMs = 3000;

// ---- key layout and records (pure; unit-tested) ----
struct FleetKeys {
  std::string rollback, control, replicas, replica_prefix;
  explicit FleetKeys(const std::string& prefix)
      : rollback(prefix + "rollback"),
        control(prefix + "control"),
        replicas(prefix + "replicas"),
        replica_prefix(prefix + "replica:") {}
  std::string replica(const std::string& id) const { return replica_prefix + id; }
};

// The default replica id: "<hostname>-<pid>".
std::string defaultReplicaId();

// "origin <id>\n" followed by formatRollbackState(state) (inactive = cleared).
std::string encodeFleetRollback(const RollbackState& state, const std::string& origin);
bool decodeFleetRollback(const std::string& text, RollbackState& state, std::string& origin);

// What a replica does with the fleet rollback key it read on (re)connect.
enum class Reconcile {
  Nothing,    // in agreement
  Adopt,      // a fleet rollback this replica does not have: apply it
  Clear,      // the fleet cleared after this replica's rollback began: clear it
  WriteLocal  // Redis lacks this replica's rollback (or has an older clear): write it
};
// `remote_present`: the key held a valid record (`remote`, its `origin`); `id`: this replica.
Reconcile reconcileRollback(const RollbackState& local, bool remote_present,
                            const RollbackState& remote, const std::string& origin,
                            const std::string& id);

struct ReplicaRecord {
  std::string id;
  std::string config_hash;
  bool rollback = false;
  std::string weights;  // "route new=10 legacy=90; ..." (effective)
  std::string admin;    // admin address
  int64_t started_ms = 0;
};
std::string encodeReplica(const ReplicaRecord& r);
bool decodeReplica(const std::string& text, ReplicaRecord& out);
// More than one config hash among the live replicas.
bool configSkew(const std::vector<ReplicaRecord>& replicas);

class Fleet {
 public:
  struct Hooks {
    // A rollback change from the fleet (state.active = false: cleared). Main thread.
    std::function<void(const RollbackState& state)> apply_rollback;
    // The current rollback state of this replica.
    std::function<RollbackState()> local_rollback;
    // This replica's record for the heartbeat (id filled in here).
    std::function<ReplicaRecord()> record;
  };

  Fleet(uv_loop_t* loop, const config::Fleet& cfg, prometheus::Registry& registry, Hooks hooks);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  void start();
  // Writes the rollback state to Redis and publishes it (a local change: origin = this replica).
  // When Redis is unreachable, counted as a fallback: it is written once Redis is back.
  void publishRollback(const RollbackState& state);
  // Started, and the fleet rollback has been read once (or the first attempt failed).
  bool settled() const { return settled_; }
  bool redisUp() const;
  const std::string& replicaId() const { return id_; }
  // The `"fleet":{...}` object for /stats.
  void appendJson(std::string& out) const;
  void close(std::function<void()> done);

 private:
  void onControlUp();
  void readRollback();
  void writeRollback(const RollbackState& state);
  void onMessage(const std::string& text);
  static void onTick(uv_timer_t* t);
  void heartbeat();
  void readRegistry();
  void setUpGauge();

  uv_loop_t* loop_;
  config::Fleet cfg_;
  FleetKeys keys_;
  std::string id_;
  Hooks hooks_;
  std::unique_ptr<RedisClient> control_;
  std::unique_ptr<RedisClient> subscriber_;
  uv_timer_t tick_{};
  bool settled_ = false;
  bool write_pending_ = false;  // a local change Redis has not taken yet
  std::vector<ReplicaRecord> replicas_;
  int64_t registry_read_ms_ = 0;
  int closing_ = 0;
  std::function<void()> closed_;
  prometheus::Gauge* up_;
  prometheus::Gauge* replicas_gauge_;
  prometheus::Gauge* skew_gauge_;
  prometheus::Gauge* fleet_rollback_;
  prometheus::Counter* errors_;
  prometheus::Counter* fallbacks_;
};

}  // namespace cutover
