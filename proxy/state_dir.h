// What a restart must not forget, kept in `state_dir` (an emptyDir in Kubernetes): the emergency
// rollback and the last config text that loaded. Two files, each replaced atomically:
//   rollback.state   "cutover-state 1" then "key value" lines: rollback_active 0|1, since (unix
//                    seconds), actor, reason
//   last_good.yaml   the config file's bytes as they last loaded successfully
//
// Reads happen once, at startup, before the loop runs (blocking, like the first config read).
// Writes run on libuv's thread pool (temp file, fsync, rename, fsync of the directory), one at a
// time in the order asked; a write waiting behind another one to the same file is replaced by the
// newer one. `done` callbacks run on the loop once the bytes are durable, or the write failed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cutover {

struct RollbackState {
  bool active = false;
  int64_t since_s = 0;  // unix time it began
  std::string actor;    // who asked ("admin", "cutoverctl", a name given with ?actor=)
  std::string reason;   // free text given with ?reason=, one line
  std::string origin;   // fleet mode: the replica it was posted to, when not this one
};

// Serialises / parses rollback.state (exposed for unit tests). Parsing is lenient about unknown
// keys; it fails only on a missing or different header line.
std::string formatRollbackState(const RollbackState& s);
bool parseRollbackState(const std::string& text, RollbackState& out);

class StateDir {
 public:
  static constexpr const char* kRollbackFile = "rollback.state";
  static constexpr const char* kLastGoodFile = "last_good.yaml";
  using Done = std::function<void(bool ok, const std::string& error)>;

  StateDir(uv_loop_t* loop, std::string dir);
  ~StateDir();
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const char* file) const { return dir_ + "/" + file; }

  // ---- startup, blocking, before the loop runs ----
  // Creates the directory if missing (one level). False with `error` when it cannot be used.
  bool prepare(std::string& error);
  // The persisted rollback; false when there is none (no file) or it cannot be read (`error`).
  bool readRollback(RollbackState& out, std::string& error) const;
  // The last config text that loaded; false when there is none.
  bool readLastGood(std::string& out, std::string& error) const;

  // ---- on the loop ----
  void writeRollback(const RollbackState& s, Done done);
  void writeLastGood(std::string text, Done done);
  // No write queued or in flight.
  bool idle() const { return jobs_.empty(); }

 private:
  struct Job;
  void enqueue(const char* file, std::string contents, Done done);
  void startNext();

  uv_loop_t* loop_;
  std::string dir_;
  std::deque<std::unique_ptr<Job>> jobs_;  // front is in flight when in_flight_
  bool in_flight_ = false;
};

// The `state_dir:` of a config file that does not load, read from its text line by line (a
// top-level `state_dir: /path`, optionally quoted), so a broken file does not hide where its
// last-known-good is. Empty when there is none.
std::string scanStateDir(const std::string& config_text);

}  // namespace cutover
