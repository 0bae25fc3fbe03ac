// Fleet mode's pure parts: key layout, the rollback and replica records, skew, and the reconnect
// schedule (1 s × 1.5 up to 30 s, ±20%).
#include "proxy/fleet.h"

#include <doctest/doctest.h>

#include "proxy/redis_client.h"

using namespace cutover;

TEST_CASE("key layout: every key and the channel live under the prefix") {
  FleetKeys k("cutover:dashboard:");
  CHECK(k.rollback == "cutover:dashboard:rollback");
  CHECK(k.control == "cutover:dashboard:control");
  CHECK(k.replicas == "cutover:dashboard:replicas");
  CHECK(k.replica("pod-1") == "cutover:dashboard:replica:pod-1");
  // Two migrations on one Redis never share a key.
  FleetKeys other("cutover:billing:");
  CHECK(other.rollback != k.rollback);
  CHECK(other.replica("pod-1") != k.replica("pod-1"));
}

TEST_CASE("default replica id is hostname-pid with only name characters") {
  const std::string id = defaultReplicaId();
  CHECK(id.ends_with("-" + std::to_string(getpid())));
  for (char c : id) {
    CHECK(((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.'));
  }
}

TEST_CASE("fleet rollback record round-trips with its origin; garbage is refused") {
  RollbackState s;
  s.active = true;
  s.since_s = 1765000000;
  s.actor = "alice";
  s.reason = "5xx on new\nsecond line";
  const std::string text = encodeFleetRollback(s, "pod-7");
  CHECK(text.rfind("origin pod-7\ncutover-state 1\n", 0) == 0);
  RollbackState back;
  std::string origin;
  REQUIRE(decodeFleetRollback(text, back, origin));
  CHECK(origin == "pod-7");
  CHECK(back.active);
  CHECK(back.since_s == 1765000000);
  CHECK(back.actor == "alice");
  CHECK(back.reason == "5xx on new second line");
  CHECK(back.origin == "pod-7");
  REQUIRE(decodeFleetRollback(encodeFleetRollback(RollbackState{}, "pod-2"), back, origin));
  CHECK_FALSE(back.active);
  CHECK_FALSE(decodeFleetRollback("cutover-state 1\n", back, origin));
  CHECK_FALSE(decodeFleetRollback("origin x\nnot a state\n", back, origin));
}

TEST_CASE("replica record round-trips; skew is more than one config hash") {
  ReplicaRecord r{"pod-1", "abc123", true, "default new=10 legacy=90", "127.0.0.1:9901", 42};
  ReplicaRecord back;
  REQUIRE(decodeReplica(encodeReplica(r), back));
  CHECK(back.id == "pod-1");
  CHECK(back.config_hash == "abc123");
  CHECK(back.rollback);
  CHECK(back.weights == "default new=10 legacy=90");
  CHECK(back.admin == "127.0.0.1:9901");
  CHECK(back.started_ms == 42);
  CHECK_FALSE(decodeReplica("something else\nid x\n", back));
  CHECK_FALSE(decodeReplica("cutover-replica 1\nhash x\n", back));  // no id

  ReplicaRecord a = r, b = r, c = r;
  CHECK_FALSE(configSkew({}));
  CHECK_FALSE(configSkew({a}));
  CHECK_FALSE(configSkew({a, b}));
  c.config_hash = "def456";
  CHECK(configSkew({a, b, c}));
}

TEST_CASE("reconnect backoff: 1 s × 1.5 up to 30 s, each within ±20%, reset to 1 s") {
  for (uint64_t seed = 0; seed < 100; ++seed) {
    GrowingBackoff b = RedisClient::reconnectBackoff(seed);
    const std::vector<int64_t> nominal_ms = {1000,  1500,  2250,  3375,  5063, 7594,
                                             11391, 17086, 25629, 30000, 30000};
    for (int64_t n : nominal_ms) {
      CHECK(b.nominal().count() == n);
      const int64_t d = b.next().count();
      CHECK(d >= static_cast<int64_t>(n * 0.8) - 1);
      CHECK(d <= std::min<int64_t>(static_cast<int64_t>(n * 1.2) + 1, 30000));
    }
    b.reset();
    CHECK(b.nominal().count() == 1000);
  }
}

TEST_CASE("reconcile on (re)connect: adopt, clear by tombstone, rewrite what Redis lacks") {
  RollbackState none;
  RollbackState local;
  local.active = true;
  local.since_s = 1000;
  RollbackState fleet = local;
  fleet.origin = "pod-2";
  RollbackState tomb_after;  // cleared at 1000 (same second counts as after)
  tomb_after.since_s = 1000;
  RollbackState tomb_before;
  tomb_before.since_s = 999;
  using R = Reconcile;
  // Key absent (never written, or Redis lost its data): a local rollback is written back.
  CHECK(reconcileRollback(none, false, none, "", "me") == R::Nothing);
  CHECK(reconcileRollback(local, false, none, "", "me") == R::WriteLocal);
  CHECK(reconcileRollback(fleet, false, none, "", "me") == R::WriteLocal);
  // An active fleet rollback is adopted unless this replica already has one, or wrote it.
  CHECK(reconcileRollback(none, true, fleet, "pod-2", "me") == R::Adopt);
  CHECK(reconcileRollback(local, true, fleet, "pod-2", "me") == R::Nothing);
  CHECK(reconcileRollback(none, true, fleet, "me", "me") == R::Nothing);
  // A clear (tombstone) wins over a rollback that began no later; a newer rollback is written.
  CHECK(reconcileRollback(none, true, tomb_after, "pod-2", "me") == R::Nothing);
  CHECK(reconcileRollback(fleet, true, tomb_after, "pod-3", "me") == R::Clear);
  CHECK(reconcileRollback(local, true, tomb_before, "pod-3", "me") == R::WriteLocal);
}
