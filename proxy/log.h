// JSON-lines logging: rare application events (EventLog, to stderr) and the per-request access log
// (AccessLog, one per worker, written off the event loop).
//
// Event line:
//   {"ts":"2026-11-27T02:50:01.123Z","level":"info","event":"listening","listener":"public",
//    "address":"127.0.0.1:8080","worker":0}
//   log::info("listening", {{"listener", name}, {"address", text}, {"worker", 0}});
//
// Access line (fields in this order; upstream_ms is null when no backend answered):
//   {"ts":"...","request_id":"...","client":"127.0.0.1","method":"GET","path":"/a?b","route":"kibana",
//    "backend":"new","endpoint":"127.0.0.1:9002","status":200,"duration_ms":12.345,
//    "upstream_ms":11.002,"bytes_in":0,"bytes_out":512,"attempts":1,"reason":"none","flags":[]}
//
// Strings are escaped for JSON: quotes, backslashes and control characters (\n, \t, \u001b, ...);
// valid UTF-8 passes through; bytes that are not valid UTF-8 become U+FFFD, so every line parses.
#pragma once

#include <uv.h>

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "config/config.h"
#include "filters/filter.h"

namespace cutover {

// Appends `s` as a JSON string literal (with the quotes) to `out`.
void appendJsonString(std::string& out, std::string_view s);
// Appends "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) for `unix_ms`, quoted.
void appendJsonTimestamp(std::string& out, int64_t unix_ms);
// Wall-clock milliseconds since the Unix epoch.
int64_t wallClockMs();

namespace log {

enum class Level : uint8_t { Debug, Info, Warn, Error };
std::string_view levelName(Level level);  // "debug", "info", "warn", "error"

// A field value: strings are quoted and escaped, integers and doubles are written bare (non-finite
// doubles as null), booleans as true/false.
class Value {
 public:
  enum class Kind : uint8_t { String, Int, Uint, Double, Bool };
  Value(std::string_view s) : kind_(Kind::String), s_(s) {}
  Value(const char* s) : kind_(Kind::String), s_(s) {}
  Value(const std::string& s) : kind_(Kind::String), s_(s) {}
  Value(bool b) : kind_(Kind::Bool), b_(b) {}
  Value(double d) : kind_(Kind::Double), d_(d) {}
  template <std::signed_integral T>
  Value(T v) : kind_(Kind::Int), i_(v) {}
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) Value(T v) : kind_(Kind::Uint), u_(v) {}

  void appendTo(std::string& out) const;

 private:
  Kind kind_;
  std::string_view s_;
  int64_t i_ = 0;
  uint64_t u_ = 0;
  double d_ = 0;
  bool b_ = false;
};

struct Field {
  std::string_view key;
  Value value;
};
using Fields = std::initializer_list<Field>;

// Writes event lines to a file descriptor, one write(2) per line (lines from several threads never
// interleave). Thread-safe. Events are rare, so writing synchronously is fine (stderr).
class EventLog {
 public:
  explicit EventLog(int fd = 2, Level min_level = Level::Info) : fd_(fd), min_level_(min_level) {}

  void setMinLevel(Level level) { min_level_ = level; }
  bool enabled(Level level) const { return level >= min_level_; }
  void write(Level level, std::string_view event, Fields fields);

  // The line without its trailing newline; `unix_ms` is the timestamp to print.
  static std::string format(int64_t unix_ms, Level level, std::string_view event, Fields fields);

 private:
  int fd_;
  std::atomic<Level> min_level_;
  std::mutex mutex_;
};

// The process's event log (stderr). Set the level at startup; everything else is thread-safe.
EventLog& events();
inline void debug(std::string_view event, Fields fields = {}) {
  events().write(Level::Debug, event, fields);
}
inline void info(std::string_view event, Fields fields = {}) {
  events().write(Level::Info, event, fields);
}
inline void warn(std::string_view event, Fields fields = {}) {
  events().write(Level::Warn, event, fields);
}
inline void error(std::string_view event, Fields fields = {}) {
  events().write(Level::Error, event, fields);
}

}  // namespace log

// One request as the access log sees it. Views must stay valid only during AccessLog::append().
struct AccessRecord {
  int64_t ts_ms = 0;  // wall clock, Unix ms; 0 = now
  std::string_view request_id;
  std::string_view client;
  std::string_view client_cert;  // verified TLS client certificate; printed only when set
  std::string_view method;
  std::string_view path;
  std::string_view route;
  std::string_view backend;
  std::string_view endpoint;
  uint16_t status = 0;
  double duration_ms = 0;
  double upstream_ms = -1;  // < 0: no upstream response (printed as null)
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint16_t attempts = 0;
  Reason reason = Reason::None;
  std::string_view
      detail;  // what exactly was wrong (a parser verdict such as "obs_fold"); optional
  bool rate_limited_dry_run = false;
  bool failover = false;
  bool retry_refused = false;
  bool override_refused = false;
  bool client_aborted = false;
};

// Appends one access line (with '\n') to `out`.
void formatAccessRecord(std::string& out, const AccessRecord& r);

// Where access lines go: a file descriptor shared by every worker's AccessLog. Writes happen on
// libuv's thread pool, serialised by the sink's mutex so that buffers from different workers never
// interleave mid-line (a pipe splits writes larger than PIPE_BUF otherwise).
class AccessLogSink {
 public:
  // Opens `path` for appending (blocking: call at startup, not on a loop); "" or "-" = stdout.
  // Returns null and sets `error` on failure.
  static std::shared_ptr<AccessLogSink> open(const std::string& path, std::string& error);
  // Uses an already open descriptor; `owned` closes it on destruction.
  AccessLogSink(int fd, bool owned) : fd_(fd), owned_(owned) {}
  ~AccessLogSink();
  AccessLogSink(const AccessLogSink&) = delete;
  AccessLogSink& operator=(const AccessLogSink&) = delete;

  // Writes all of `data` (looping over partial writes and EINTR/EAGAIN). Blocking: thread pool
  // only. Returns 0 or a negative errno.
  int writeAll(const char* data, size_t len);
  int fd() const { return fd_; }
  // Lines the workers' AccessLogs dropped, all together (read at scrape). Thread-safe.
  void noteDropped() { dropped_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> dropped_{0};
  std::mutex mutex_;
  int fd_;
  bool owned_;
};

// Per-worker access log, used only on its worker's loop thread.
//
// append() formats into the active buffer. A repeating 100 ms timer, or the active buffer passing
// 64 KiB, hands the buffer to the thread pool (uv_queue_work → AccessLogSink::writeAll) and swaps
// in the spare one, so the loop never blocks on the disk or a slow stdout reader. While a write is
// in flight new lines accumulate in the active buffer; past `max_backlog` bytes they are dropped
// and counted (dropped()). Buffers keep their capacity, so steady state allocates nothing.
//
// Lifecycle: construct on the loop thread (the timer is embedded and started here). close(done)
// flushes what is buffered, waits for the write in flight, closes the timer and then calls
// `done` from the loop; the owner must keep the AccessLog alive until `done` runs, e.g.
//   log->close([owner] { owner->onAccessLogClosed(); });   // destroy it there
// Destroying it earlier is a bug (the destructor aborts if a handle or a write is still live).
class AccessLog {
 public:
  struct Options {
    config::AccessLog::Mode mode = config::AccessLog::Mode::All;
    double sample = 1.0;  // Sampled: fraction kept, 0..1
    uint64_t flush_interval_ms = 100;
    size_t flush_bytes = 64 * 1024;
    size_t max_backlog = 8 * 1024 * 1024;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;  // sampling PRNG
  };

  AccessLog(uv_loop_t* loop, std::shared_ptr<AccessLogSink> sink, Options options);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // New mode/sample (after a reload); the sink is fixed for the process lifetime.
  void configure(config::AccessLog::Mode mode, double sample);

  // Whether a request with this outcome is logged under the current mode. ErrorsOnly keeps status
  // >= 500, status 0 (no response sent) and every local reply (reason != None). Sampled draws from
  // the PRNG, so call it once per request.
  bool wants(uint16_t status, Reason reason);
  // Formats and buffers one line if wants() says so. Returns whether it was buffered.
  bool append(const AccessRecord& record);
  // Buffers an already-decided line unconditionally (still subject to the backlog bound).
  void appendUnfiltered(const AccessRecord& record);

  // Starts a write of whatever is buffered, if no write is in flight. The timer calls this.
  void flush();
  void close(std::function<void()> done);

  uint64_t dropped() const { return dropped_; }
  uint64_t writeErrors() const { return write_errors_; }
  size_t buffered() const { return active_.size(); }
  bool writing() const { return writing_; }

 private:
  static void onTimer(uv_timer_t* timer);
  static void onWork(uv_work_t* req);
  static void onWorkDone(uv_work_t* req, int status);
  static void onTimerClosed(uv_handle_t* handle);
  void maybeFinishClose();

  uv_loop_t* loop_;
  std::shared_ptr<AccessLogSink> sink_;
  Options options_;
  uint64_t rng_;
  uv_timer_t timer_;
  uv_work_t work_;
  std::string active_;
  std::string inflight_;
  int write_result_ = 0;  // set by onWork (pool thread), read in onWorkDone (loop thread)
  bool writing_ = false;
  bool closing_ = false;
  bool timer_closed_ = false;
  std::function<void()> done_;
  uint64_t dropped_ = 0;
  uint64_t write_errors_ = 0;
};

}  // namespace cutover
