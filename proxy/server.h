// The main thread: owns the running snapshot, the listening sockets, the workers, signals, the
// admin listener and config reloads. Workers never call into it on the hot path.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/snapshot.h"

namespace cutover {

class Worker;
class StateStore;
class HealthChecker;

class Server {
 public:
  explicit Server(std::string config_path);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the config, binds, starts the workers and runs until drained. Returns the exit code.
  int run();

 private:
  struct BoundListener {
    std::string name;
    std::string address;      // as configured
    std::string bound;        // actual address (port 0 resolved)
    std::vector<int> fds;     // one SO_REUSEPORT socket per worker
  };
  std::shared_ptr<const Snapshot> buildSnapshot(std::shared_ptr<const config::Config> cfg);
  int bindListener(const config::Listener& l, uint32_t workers, BoundListener& out);
  void startDrain(const char* why);
  static void onSignal(uv_signal_t* s, int signum);
  static void onCheck(uv_timer_t* t);
  static void onDrainDeadline(uv_timer_t* t);

  std::string config_path_;
  uv_loop_t loop_{};
  uv_signal_t sigterm_{}, sigint_{}, sighup_{};
  uv_timer_t check_{}, drain_deadline_{};
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<HealthChecker> health_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<BoundListener> listeners_;
  uint64_t generation_ = 0;
  bool draining_ = false;
};

// One JSON line on stderr for an application event. `fields` is preformatted JSON members
// (`"k":"v","n":1`), may be empty.
void logEvent(const char* level, const char* event, const std::string& fields);
std::string jsonEscape(std::string_view s);

}  // namespace cutover
