#include "proxy/fleet.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "proxy/log.h"
#include "proxy/redis_client.h"

namespace cutover {

namespace {

std::string oneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

}  // namespace

std::string defaultReplicaId() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::snprintf(host, 8, "cutover");
  std::string id = host;
  for (char& c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) c = '-';
  }
  return id + "-" + std::to_string(getpid());
}

std::string encodeFleetRollback(const RollbackState& state, const std::string& origin) {
  RollbackState s = state;
  s.origin.clear();  // the origin line comes first, outside the state text
  return "origin " + oneLine(origin) + "\n" + formatRollbackState(s);
}

bool decodeFleetRollback(const std::string& text, RollbackState& state, std::string& origin) {
  if (text.rfind("origin ", 0) != 0) return false;
  const size_t nl = text.find('\n');
  if (nl == std::string::npos) return false;
  RollbackState s;
  if (!parseRollbackState(text.substr(nl + 1), s)) return false;
  origin = text.substr(7, nl - 7);
  s.origin = origin;
  state = std::move(s);
  return true;
}

std::string encodeReplica(const ReplicaRecord& r) {
  std::string out = "cutover-replica 1\n";
  out += "id " + oneLine(r.id) + "\n";
  out += "hash " + oneLine(r.config_hash) + "\n";
  out += std::string("rollback ") + (r.rollback ? "1" : "0") + "\n";
  out += "weights " + oneLine(r.weights) + "\n";
  out += "admin " + oneLine(r.admin) + "\n";
  out += "started " + std::to_string(r.started_ms) + "\n";
  return out;
}

bool decodeReplica(const std::string& text, ReplicaRecord& out) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != "cutover-replica 1") return false;
  ReplicaRecord r;
  while (std::getline(in, line)) {
    const size_t sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (key == "id") r.id = value;
    if (key == "hash") r.config_hash = value;
    if (key == "rollback") r.rollback = value == "1";
    if (key == "weights") r.weights = value;
    if (key == "admin") r.admin = value;
    if (key == "started") r.started_ms = std::strtoll(value.c_str(), nullptr, 10);
  }
  if (r.id.empty()) return false;
  out = std::move(r);
  return true;
}

Reconcile reconcileRollback(const RollbackState& local, bool remote_present,
                            const RollbackState& remote, const std::string& origin,
                            const std::string& id) {
  if (!remote_present) return local.active ? Reconcile::WriteLocal : Reconcile::Nothing;
  if (remote.active) {
    return !local.active && origin != id ? Reconcile::Adopt : Reconcile::Nothing;
  }
  if (!local.active) return Reconcile::Nothing;
  // A tombstone: the clear wins over a rollback that began no later than it.
  return local.since_s <= remote.since_s ? Reconcile::Clear : Reconcile::WriteLocal;
}

bool configSkew(const std::vector<ReplicaRecord>& replicas) {
  std::set<std::string> hashes;
  for (const auto& r : replicas) hashes.insert(r.config_hash);
  return hashes.size() > 1;
}

// ---- Fleet --------------------------------------------------------------------------------------

Fleet::Fleet(uv_loop_t* loop, const config::Fleet& cfg, prometheus::Registry& registry, Hooks hooks)
    : loop_(loop),
      cfg_(cfg),
      keys_(cfg.key_prefix),
      id_(cfg.replica_id.empty() ? defaultReplicaId() : cfg.replica_id),
      hooks_(std::move(hooks)) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  up_ = &BuildGauge()
             .Name("cutover_fleet_redis_up")
             .Help("1 while both fleet connections to Redis (control and subscriber) are up.")
             .Register(registry)
             .Add({});
  replicas_gauge_ = &BuildGauge()
                         .Name("cutover_fleet_replicas")
                         .Help("Live replicas in the fleet registry, as last read from Redis.")
                         .Register(registry)
                         .Add({});
  skew_gauge_ = &BuildGauge()
                     .Name("cutover_fleet_config_skew")
                     .Help("1 when the live replicas do not all run the same config (hash).")
                     .Register(registry)
                     .Add({});
  fleet_rollback_ = &BuildGauge()
                         .Name("cutover_fleet_rollback_active")
                         .Help("1 while the active rollback was posted to another replica.")
                         .Register(registry)
                         .Add({});
  errors_ = &BuildCounter()
                 .Name("cutover_fleet_errors_total")
                 .Help("Fleet Redis commands that failed or timed out, and lost connections.")
                 .Register(registry)
                 .Add({});
  fallbacks_ = &BuildCounter()
                    .Name("cutover_fleet_fallbacks_total")
                    .Help("Fleet actions done locally only because Redis was unreachable.")
                    .Register(registry)
                    .Add({});
  RedisClient::Options o;
  o.host = cfg.host;
  o.port = cfg.port;
  o.password = cfg.password;
  o.timeout_ms = cfg.timeout.count();
  o.name = "control";
  control_ = std::make_unique<RedisClient>(loop_, o, [this](bool up, const std::string&) {
    if (!up) {
      errors_->Increment();
      settled_ = true;  // Redis is not there: start on local state, catch up once it is
      // The subscriber sends nothing, so it would not notice an unresponsive Redis itself.
      subscriber_->reconnect("the control connection lost Redis");
    }
    setUpGauge();
    if (up) onControlUp();
  });
  o.name = "subscriber";
  subscriber_ = std::make_unique<RedisClient>(loop_, o, [this](bool up, const std::string&) {
    if (!up) errors_->Increment();
    setUpGauge();
    if (up) readRollback();  // messages may have been missed while it was down
  });
  subscriber_->setSubscription(keys_.control, [this](const std::string& m) { onMessage(m); });
  uv_timer_init(loop_, &tick_);
  tick_.data = this;
}

Fleet::~Fleet() = default;

void Fleet::start() {
  log::info("fleet_start", {{"replica_id", id_},
                            {"redis", cfg_.host + ":" + std::to_string(cfg_.port)},
                            {"key_prefix", cfg_.key_prefix}});
  control_->start();
  subscriber_->start();
  uv_timer_start(&tick_, onTick, kHeartbeatIntervalMs, kHeartbeatIntervalMs);
}

bool Fleet::redisUp() const { return control_->up() && subscriber_->up(); }

void Fleet::setUpGauge() { up_->Set(redisUp() ? 1 : 0); }

void Fleet::onControlUp() {
  heartbeat();
  readRollback();
}

void Fleet::readRollback() {
  if (!control_->up()) return;  // the control connection reads it when it comes up
  if (write_pending_) {
    // A change made here while Redis was away: ours is newer than what Redis holds.
    writeRollback(hooks_.local_rollback());
    settled_ = true;
    return;
  }
  const bool sent = control_->command({"GET", keys_.rollback}, [this](bool ok,
                                                                      const RedisClient::Reply& r) {
    settled_ = true;
    if (!ok) {
      errors_->Increment();
      return;
    }
    const RollbackState local = hooks_.local_rollback();
    RollbackState remote;
    std::string origin;
    const bool present =
        r.kind == RedisClient::Reply::Kind::String && decodeFleetRollback(r.str, remote, origin);
    switch (reconcileRollback(local, present, remote, origin, id_)) {
      case Reconcile::Nothing:
        break;
      case Reconcile::Adopt:
      case Reconcile::Clear:
        hooks_.apply_rollback(remote);
        break;
      case Reconcile::WriteLocal:
        log::warn("fleet_rollback_rewritten",
                  {{"replica_id", id_},
                   {"why", present ? "older than this replica's rollback" : "not in Redis"}});
        writeRollback(local);
        break;
    }
    fleet_rollback_->Set(hooks_.local_rollback().active && !hooks_.local_rollback().origin.empty());
  });
  if (!sent) settled_ = true;
}

void Fleet::publishRollback(const RollbackState& state) {
  fleet_rollback_->Set(state.active && !state.origin.empty());
  if (!control_->up()) {
    write_pending_ = true;
    fallbacks_->Increment();
    log::warn("fleet_rollback_local_only",
              {{"replica_id", id_}, {"why", "Redis unreachable; written once it is back"}});
    return;
  }
  writeRollback(state);
}

void Fleet::writeRollback(const RollbackState& state) {
  RollbackState s = state;
  if (!s.active) s.since_s = wallClockMs() / 1000;  // the tombstone records when it was cleared
  const std::string text = encodeFleetRollback(s, state.origin.empty() ? id_ : state.origin);
  auto done = [this](bool ok, const RedisClient::Reply& r) {
    if (ok) return;
    write_pending_ = true;
    errors_->Increment();
    log::warn("fleet_rollback_write_failed", {{"error", r.str}});
  };
  write_pending_ = false;
  // Pipelined on one connection: Redis runs them in order, so a reader that gets the message
  // finds the key already written.
  bool sent = control_->command({"SET", keys_.rollback, text}, done);
  sent = sent && control_->command({"PUBLISH", keys_.control, text}, done);
  if (!sent) {
    write_pending_ = true;
    fallbacks_->Increment();
  }
}

void Fleet::onMessage(const std::string& text) {
  RollbackState state;
  std::string origin;
  if (!decodeFleetRollback(text, state, origin)) {
    log::warn("fleet_message_ignored", {{"why", "not a fleet rollback message"}});
    return;
  }
  if (origin == id_) return;   // our own change, applied when it was posted
  if (write_pending_) return;  // ours is newer and goes to Redis once it is back
  hooks_.apply_rollback(state);
  const RollbackState now = hooks_.local_rollback();
  fleet_rollback_->Set(now.active && !now.origin.empty());
}

void Fleet::onTick(uv_timer_t* t) {
  auto* self = static_cast<Fleet*>(t->data);
  self->heartbeat();
  self->readRegistry();
}

void Fleet::heartbeat() {
  if (!control_->up()) return;
  ReplicaRecord rec = hooks_.record();
  rec.id = id_;
  auto done = [this](bool ok, const RedisClient::Reply&) {
    if (!ok) errors_->Increment();
  };
  control_->command(
      {"SET", keys_.replica(id_), encodeReplica(rec), "PX", std::to_string(kReplicaTtlMs)}, done);
  control_->command({"SADD", keys_.replicas, id_}, done);
}

void Fleet::readRegistry() {
  const bool sent =
      control_->command({"SMEMBERS", keys_.replicas}, [this](bool ok, const RedisClient::Reply& r) {
        if (!ok || r.kind != RedisClient::Reply::Kind::Array) {
          errors_->Increment();
          return;
        }
        std::vector<std::string> ids;
        std::vector<std::string> argv{"MGET"};
        for (const auto& e : r.elements) {
          ids.push_back(e.str);
          argv.push_back(keys_.replica(e.str));
        }
        if (ids.empty()) return;
        control_->command(std::move(argv), [this, ids](bool ok2, const RedisClient::Reply& values) {
          if (!ok2 || values.kind != RedisClient::Reply::Kind::Array ||
              values.elements.size() != ids.size()) {
            errors_->Increment();
            return;
          }
          std::vector<ReplicaRecord> live;
          std::vector<std::string> srem{"SREM", keys_.replicas};
          for (size_t i = 0; i < ids.size(); ++i) {
            ReplicaRecord rec;
            if (values.elements[i].kind == RedisClient::Reply::Kind::String &&
                decodeReplica(values.elements[i].str, rec)) {
              live.push_back(std::move(rec));
            } else {
              srem.push_back(ids[i]);  // its heartbeat key expired: gone
            }
          }
          if (srem.size() > 2) control_->command(std::move(srem), {});
          replicas_ = std::move(live);
          registry_read_ms_ = wallClockMs();
          replicas_gauge_->Set(static_cast<double>(replicas_.size()));
          skew_gauge_->Set(configSkew(replicas_) ? 1 : 0);
        });
      });
  if (!sent) return;
}

void Fleet::appendJson(std::string& out) const {
  out += "{\"replica_id\":";
  appendJsonString(out, id_);
  out += ",\"redis\":";
  appendJsonString(out, cfg_.host + ":" + std::to_string(cfg_.port));
  out += ",\"key_prefix\":";
  appendJsonString(out, cfg_.key_prefix);
  out += std::string(",\"redis_up\":") + (redisUp() ? "true" : "false");
  out += std::string(",\"rollback_write_pending\":") + (write_pending_ ? "true" : "false");
  out += std::string(",\"config_skew\":") + (configSkew(replicas_) ? "true" : "false");
  out += ",\"registry_read_at\":";
  if (registry_read_ms_ == 0) {
    out += "null";
  } else {
    appendJsonTimestamp(out, registry_read_ms_);
  }
  out += ",\"replicas\":[";
  for (size_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaRecord& r = replicas_[i];
    if (i > 0) out += ",";
    out += "{\"id\":";
    appendJsonString(out, r.id);
    out += std::string(",\"self\":") + (r.id == id_ ? "true" : "false");
    out += ",\"config_hash\":";
    appendJsonString(out, r.config_hash);
    out += std::string(",\"rollback\":") + (r.rollback ? "true" : "false");
    out += ",\"weights\":";
    appendJsonString(out, r.weights);
    out += ",\"admin\":";
    appendJsonString(out, r.admin);
    out += "}";
  }
  out += "]}";
}

void Fleet::close(std::function<void()> done) {
  closed_ = std::move(done);
  closing_ = 3;
  auto one = [this] {
    if (--closing_ == 0 && closed_) {
      auto d = std::move(closed_);
      d();
    }
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_), [](uv_handle_t* h) {
    auto* self = static_cast<Fleet*>(h->data);
    if (--self->closing_ == 0 && self->closed_) {
      auto d = std::move(self->closed_);
      d();
    }
  });
  control_->close(one);
  subscriber_->close(one);
}

}  // namespace cutover
