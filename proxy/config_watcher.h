// Notices changes to the config file and reads it without blocking the (main) loop.
//
// It watches the file's DIRECTORY with uv_fs_event, because the file itself is often replaced, not
// written: editors rename a new file over it, and Kubernetes swaps a ConfigMap by renaming the
// `..data` symlink to a new timestamped directory (the file is a symlink through `..data`). Events
// for the file's name or for `..data` restart a debounce timer; when it fires the file is read
// asynchronously (uv_fs_open/read/close on the thread pool) and on_change runs only if the bytes
// differ from the last contents seen (by a change, a readNow(), or prime()).
//
//   fs event (name | ..data) ──► debounce (restarted by each event) ──► async read ──► differs?
//                                                                                       └►
//                                                                                       on_change
//
// All callbacks run on the loop thread, never from inside the call that caused them. Read errors
// (ENOENT while an editor or ConfigMap swap is half done) go to on_error; the next event retries.
// Only a regular file is read: the open does not wait (O_NONBLOCK) and an fstat refuses a FIFO,
// socket, device or directory with UV_EFTYPE, and a file over max_bytes with UV_EFBIG, so no
// thread-pool thread can be stuck in a read that never ends.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace cutover {

class ConfigWatcher {
 public:
  using ChangeCallback = std::function<void(std::string contents)>;
  using ErrorCallback = std::function<void(int uv_error, const std::string& what)>;
  using ReadCallback = std::function<void(int uv_error, std::string contents)>;

  struct Options {
    uint64_t debounce_ms = 50;
    size_t max_bytes = 16 * 1024 * 1024;  // larger files are refused (UV_EFBIG)
  };

  ConfigWatcher(uv_loop_t* loop, std::string path, ChangeCallback on_change, ErrorCallback on_error,
                Options options);
  ConfigWatcher(uv_loop_t* loop, std::string path, ChangeCallback on_change,
                ErrorCallback on_error = {})
      : ConfigWatcher(loop, std::move(path), std::move(on_change), std::move(on_error), Options{}) {
  }
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // Starts watching the directory. Returns 0 or a libuv error (no callback in that case).
  int start();
  // The contents the running config was loaded from (at startup, read with a blocking read): an
  // event whose read yields the same bytes is not a change.
  void prime(std::string contents) {
    last_ = std::move(contents);
    have_last_ = true;
  }
  // Reads the file now (SIGHUP, POST /reload) and calls `done` exactly once, later, on the loop.
  // A successful read also becomes the "last seen" contents, so the fs event that follows the same
  // write does not report it a second time.
  void readNow(ReadCallback done);

  // Stops watching; reads in flight finish (readNow callbacks get UV_ECANCELED, on_change is not
  // called) and then `done` runs from the loop. Keep the watcher alive until then. Idempotent.
  void close(std::function<void()> done);

  const std::string& path() const { return path_; }
  uint64_t eventsSeen() const { return events_seen_; }

 private:
  struct Read;
  static void onFsEvent(uv_fs_event_t* handle, const char* filename, int events, int status);
  static void onDebounce(uv_timer_t* timer);
  static void onHandleClosed(uv_handle_t* handle);
  void startRead(ReadCallback done);
  void onReadDone(Read* read, int err);
  void maybeFinishClose();

  uv_loop_t* loop_;
  std::string path_;
  std::string dir_;
  std::string name_;
  ChangeCallback on_change_;
  ErrorCallback on_error_;
  Options options_;
  uv_fs_event_t event_;
  uv_timer_t debounce_;
  int handles_open_ = 0;
  int reads_in_flight_ = 0;
  bool started_ = false;
  bool closing_ = false;
  bool change_read_in_flight_ = false;
  bool change_pending_ = false;  // an event came while a change read was in flight
  bool have_last_ = false;
  std::string last_;
  uint64_t events_seen_ = 0;
  std::function<void()> close_done_;
};

}  // namespace cutover
