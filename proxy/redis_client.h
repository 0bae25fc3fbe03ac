// One Redis connection on a libuv loop. The only file pair that includes hiredis (its async API
// with the libuv adapter): no call here blocks the loop.
//
//   Idle ─▶ Resolving (uv_getaddrinfo, DNS names only) ─▶ Connecting ─▶ Authenticating ─▶ Up
//    ▲                                                                    (AUTH, when a   │
//    │                                                                     password)     │
//    └──── Backoff timer (1 s × 1.5 up to 30 s, ±20%, reset once Up) ◀── any error, a  ◀─┘
//                                                                        command timeout,
//                                                                        the peer closing
// In subscriber mode the connection is Up once SUBSCRIBE is confirmed, and resubscribes after
// every reconnect. A command that outlives `timeout` fails, and the connection is dropped and
// re-made (a Redis that stopped answering is treated as down).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "policy/backoff.h"

struct redisAsyncContext;

namespace cutover {

class RedisClient {
 public:
  struct Options {
    std::string host;
    uint16_t port = 6379;
    std::string password;  // empty: no AUTH
    int64_t timeout_ms = 20;
    int64_t connect_timeout_ms = 1000;
    std::string name;  // for logs: "control", "subscriber"
  };
  struct Reply {
    enum class Kind { Nil, String, Integer, Array, Status, Error };
    Kind kind = Kind::Nil;
    std::string str;  // String, Status, Error
    int64_t integer = 0;
    std::vector<Reply> elements;
  };
  // ok = false: the command failed (r.str says why: "timeout", "disconnected", a Redis error).
  using Callback = std::function<void(bool ok, const Reply& r)>;
  // Called when the connection comes up, when it is lost, and on the first failure to connect.
  using StateListener = std::function<void(bool up, const std::string& why)>;

  RedisClient(uv_loop_t* loop, Options options, StateListener on_state);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Begins connecting; reconnects on its own until close().
  void start();
  bool up() const { return state_ == State::Up; }
  // Sends a command. Returns false and never calls back when not Up; otherwise `cb` runs exactly
  // once, later, with the reply or a failure.
  bool command(std::vector<std::string> argv, Callback cb);
  // Subscriber mode (set before start()): SUBSCRIBE `channel` on every connect; each published
  // message goes to `on_message`. Such a connection sends no other commands.
  void setSubscription(std::string channel, std::function<void(const std::string&)> on_message);
  // Drops a live connection (if any) and reconnects after the backoff: for a subscriber whose
  // sibling command connection found Redis unresponsive (a subscriber sends nothing, so a dead
  // peer would go unnoticed).
  void reconnect(const std::string& why);
  // Drops the connection and pending callbacks (never called), closes the timers; `done` runs
  // once everything is closed. The object may be destroyed after that.
  void close(std::function<void()> done);

  // The reconnect schedule: delays for attempts 0, 1, 2, ... (exposed for unit tests).
  static GrowingBackoff reconnectBackoff(uint64_t seed);

 private:
  enum class State { Idle, Resolving, Connecting, Authenticating, Up, Backoff, Closed };
  struct Pending {
    int64_t deadline_ms;
    Callback cb;
  };
  void resolve();
  void connectTo(const std::string& ip);
  void onConnected();
  void onReady();
  void markUp();
  // Drops the connection, fails what is pending, arms the backoff timer.
  void fail(const std::string& why);
  // fail() on the next loop turn (from inside hiredis' connect callback).
  void failSoon(const std::string& why);
  void failPending(const std::string& why);
  void armTimeoutTimer();
  bool send(const std::vector<std::string>& argv, uint64_t id);
  void maybeClosed();
  static void onResolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res);
  static void onTimer(uv_timer_t* t);
  static void onBackoff(uv_timer_t* t);
  static void onConnectCb(const redisAsyncContext* ac, int status);
  static void onDisconnectCb(const redisAsyncContext* ac, int status);
  static void onReplyCb(redisAsyncContext* ac, void* reply, void* privdata);
  static void onSubscribeCb(redisAsyncContext* ac, void* reply, void* privdata);

  uv_loop_t* loop_;
  Options opt_;
  StateListener on_state_;
  State state_ = State::Idle;
  redisAsyncContext* ac_ = nullptr;
  uv_timer_t timeout_timer_{};  // command deadlines, and the connect deadline
  uv_timer_t backoff_timer_{};
  uv_getaddrinfo_t resolve_req_{};
  bool resolving_ = false;
  int64_t connect_deadline_ms_ = 0;  // 0: not connecting
  GrowingBackoff backoff_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Pending> pending_;  // by id = send order
  std::string channel_;
  std::function<void(const std::string&)> on_message_;
  std::string deferred_error_;  // failSoon()'s reason
  bool reported_up_ = false;
  bool reported_down_ = false;  // the first failure, and each loss after being up, are reported
  std::string last_error_;      // logged once per distinct error while retrying
  int open_handles_ = 0;
  std::function<void()> closed_;
};

}  // namespace cutover
