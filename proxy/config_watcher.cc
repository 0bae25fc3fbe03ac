#include "proxy/config_watcher.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace cutover {

namespace {
constexpr size_t kChunk = 64 * 1024;
}

// One asynchronous read of the whole file: open → read... → close, each step on the thread pool.
struct ConfigWatcher::Read {
  ConfigWatcher* owner = nullptr;
  ReadCallback done;  // empty for reads started by a change event
  uv_fs_t req{};
  uv_work_t defer{};  // reports an open that failed synchronously on a later loop turn
  uv_file fd = -1;
  int error = 0;
  std::string data;
  char chunk[kChunk];

  static void onOpen(uv_fs_t* req);
  static void onStat(uv_fs_t* req);
  static void onRead(uv_fs_t* req);
  static void onClose(uv_fs_t* req);
  void readNext();
  void closeFile();
  void finish();
};

void ConfigWatcher::Read::onOpen(uv_fs_t* req) {
  auto* self = static_cast<Read*>(req->data);
  const ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (result < 0) {
    self->error = static_cast<int>(result);
    self->finish();
    return;
  }
  self->fd = static_cast<uv_file>(result);
  self->req.data = self;
  if (uv_fs_fstat(self->owner->loop_, &self->req, self->fd, onStat) < 0) {
    self->error = UV_EIO;
    self->closeFile();
  }
}

// Only a regular file of at most max_bytes is read: a FIFO (opened without waiting thanks to
// O_NONBLOCK) would block a thread-pool thread in read() forever, and a device never ends.
void ConfigWatcher::Read::onStat(uv_fs_t* req) {
  auto* self = static_cast<Read*>(req->data);
  const ssize_t result = req->result;
  const uint64_t mode = req->statbuf.st_mode;
  const uint64_t size = req->statbuf.st_size;
  uv_fs_req_cleanup(req);
  if (result < 0) {
    self->error = static_cast<int>(result);
  } else if ((mode & S_IFMT) != S_IFREG) {
    self->error = UV_EFTYPE;
  } else if (size > self->owner->options_.max_bytes) {
    self->error = UV_EFBIG;
  }
  if (self->error != 0) {
    self->closeFile();
    return;
  }
  self->readNext();
}

void ConfigWatcher::Read::readNext() {
  uv_buf_t buf = uv_buf_init(chunk, sizeof(chunk));
  req.data = this;
  const int r =
      uv_fs_read(owner->loop_, &req, fd, &buf, 1, static_cast<int64_t>(data.size()), onRead);
  if (r < 0) {
    error = r;
    closeFile();
  }
}

void ConfigWatcher::Read::onRead(uv_fs_t* req) {
  auto* self = static_cast<Read*>(req->data);
  const ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (result < 0) {
    self->error = static_cast<int>(result);
    self->closeFile();
    return;
  }
  if (result == 0) {  // end of file
    self->closeFile();
    return;
  }
  self->data.append(self->chunk, static_cast<size_t>(result));
  if (self->data.size() > self->owner->options_.max_bytes) {
    self->error = UV_EFBIG;
    self->closeFile();
    return;
  }
  self->readNext();
}

void ConfigWatcher::Read::closeFile() {
  req.data = this;
  if (uv_fs_close(owner->loop_, &req, fd, onClose) < 0) finish();  // inside a callback already
}

void ConfigWatcher::Read::onClose(uv_fs_t* req) {
  auto* self = static_cast<Read*>(req->data);
  uv_fs_req_cleanup(req);
  self->finish();
}

void ConfigWatcher::Read::finish() {
  std::unique_ptr<Read> holder(this);
  owner->onReadDone(this, error);
}

ConfigWatcher::ConfigWatcher(uv_loop_t* loop, std::string path, ChangeCallback on_change,
                             ErrorCallback on_error, Options options)
    : loop_(loop),
      path_(std::move(path)),
      on_change_(std::move(on_change)),
      on_error_(std::move(on_error)),
      options_(options) {
  const size_t slash = path_.rfind('/');
  // push_back rather than `dir_ = "."`: GCC 12 reports a false -Wrestrict on the latter.
  if (slash == std::string::npos) {
    dir_.push_back('.');
    name_ = path_;
  } else {
    dir_ = path_.substr(0, slash == 0 ? 1 : slash);
    name_ = path_.substr(slash + 1);
  }
  uv_timer_init(loop_, &debounce_);
  debounce_.data = this;
  ++handles_open_;
  event_.data = this;
}

ConfigWatcher::~ConfigWatcher() {
  if (handles_open_ > 0 || reads_in_flight_ > 0) {
    std::fputs("cutover: ConfigWatcher destroyed before its close() completed\n", stderr);
    std::abort();
  }
}

int ConfigWatcher::start() {
  if (started_ || closing_) return UV_EINVAL;
  int r = uv_fs_event_init(loop_, &event_);
  if (r < 0) return r;
  event_.data = this;
  ++handles_open_;
  started_ = true;
  r = uv_fs_event_start(&event_, onFsEvent, dir_.c_str(), 0);
  // On failure the handle stays initialised and is closed by close() like any other.
  return r;
}

void ConfigWatcher::onFsEvent(uv_fs_event_t* handle, const char* filename, int /*events*/,
                              int status) {
  auto* self = static_cast<ConfigWatcher*>(handle->data);
  if (self->closing_) return;
  if (status < 0) {
    if (self->on_error_) self->on_error_(status, std::string("watch ").append(self->dir_));
    return;
  }
  // No name: the platform could not say which entry changed, so assume it was ours.
  if (filename != nullptr) {
    const std::string_view name(filename);
    if (name != self->name_ && name != "..data") return;
  }
  ++self->events_seen_;
  uv_timer_start(&self->debounce_, onDebounce, self->options_.debounce_ms, 0);
}

void ConfigWatcher::onDebounce(uv_timer_t* timer) {
  auto* self = static_cast<ConfigWatcher*>(timer->data);
  if (self->closing_) return;
  if (self->change_read_in_flight_) {
    self->change_pending_ = true;  // read again once this one is done: it may predate the write
    return;
  }
  self->change_read_in_flight_ = true;
  self->startRead({});
}

void ConfigWatcher::readNow(ReadCallback done) { startRead(std::move(done)); }

void ConfigWatcher::startRead(ReadCallback done) {
  auto read = std::make_unique<Read>();
  read->owner = this;
  read->done = std::move(done);
  read->req.data = read.get();
  read->defer.data = read.get();
  ++reads_in_flight_;
  Read* r = read.release();  // owned by the request chain until finish()
  if (closing_) {
    r->error = UV_ECANCELED;
  } else {
    const int err = uv_fs_open(loop_, &r->req, path_.c_str(),
                               O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0, Read::onOpen);
    if (err == 0) return;
    r->error = err;
  }
  // Report on a later loop turn, never from inside this call.
  uv_queue_work(
      loop_, &r->defer, [](uv_work_t*) {},
      [](uv_work_t* w, int) { static_cast<Read*>(w->data)->finish(); });
}

void ConfigWatcher::onReadDone(Read* read, int err) {
  --reads_in_flight_;
  const bool change_read = !read->done;
  if (change_read) change_read_in_flight_ = false;
  if (closing_) {
    if (read->done) read->done(UV_ECANCELED, {});
    maybeFinishClose();
    return;
  }
  bool differs = false;
  if (err == 0) {
    differs = !have_last_ || read->data != last_;
    if (differs) {
      last_ = read->data;
      have_last_ = true;
    }
  }
  if (change_read) {
    if (err != 0) {
      if (on_error_) on_error_(err, std::string("read ").append(path_));
    } else if (differs && on_change_) {
      on_change_(read->data);
    }
    if (change_pending_ && !closing_) {
      change_pending_ = false;
      change_read_in_flight_ = true;
      startRead({});
    }
  } else {
    read->done(err, err == 0 ? std::move(read->data) : std::string());
  }
  if (closing_) maybeFinishClose();
}

void ConfigWatcher::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  uv_close(reinterpret_cast<uv_handle_t*>(&debounce_), onHandleClosed);
  if (started_) uv_close(reinterpret_cast<uv_handle_t*>(&event_), onHandleClosed);
}

void ConfigWatcher::onHandleClosed(uv_handle_t* handle) {
  auto* self = static_cast<ConfigWatcher*>(handle->data);
  --self->handles_open_;
  self->maybeFinishClose();
}

void ConfigWatcher::maybeFinishClose() {
  if (!closing_ || handles_open_ > 0 || reads_in_flight_ > 0 || !close_done_) return;
  std::function<void()> done = std::move(close_done_);
  done();  // may destroy *this
}

}  // namespace cutover
