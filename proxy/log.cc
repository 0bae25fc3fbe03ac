#include "proxy/log.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace cutover {

namespace {

constexpr char kHex[] = "0123456789abcdef";

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one (overlong forms,
// surrogates and code points past U+10FFFF are invalid).
size_t utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  size_t n;
  uint32_t min;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, min = 0x80, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, min = 0x800, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

template <typename T>
void appendNumber(std::string& out, T v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, ec == std::errc() ? end - buf : 0);
}

void appendDouble(std::string& out, double d, int precision) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[64];
  auto [end, ec] =
      precision < 0 ? std::to_chars(buf, buf + sizeof(buf), d)
                    : std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed, precision);
  if (ec != std::errc()) {
    out += "null";
    return;
  }
  out.append(buf, end - buf);
}

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    // Copy the longest run that needs no escaping in one append.
    size_t run = i;
    while (run < s.size()) {
      const unsigned char c = static_cast<unsigned char>(s[run]);
      if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) break;
      ++run;
    }
    out.append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = utf8SequenceLength(s, i);
      if (n == 0) {
        out += "\xef\xbf\xbd";  // U+FFFD
        ++i;
      } else {
        out.append(s.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
    ++i;
  }
  out += '"';
}

void appendJsonTimestamp(std::string& out, int64_t unix_ms) {
  // gmtime_r once per second per thread: access lines arrive many per second.
  thread_local int64_t cached_sec = INT64_MIN;
  thread_local char cached[64];
  int64_t sec = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  const int64_t ms = unix_ms - sec * 1000;
  if (sec != cached_sec) {
    time_t t = static_cast<time_t>(sec);
    tm parts{};
    gmtime_r(&t, &parts);
    std::snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", parts.tm_year + 1900,
                  parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec);
    cached_sec = sec;
  }
  out += '"';
  out += cached;
  out += '.';
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out += "Z\"";
}

int64_t wallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace log {

std::string_view levelName(Level level) {
  switch (level) {
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warn:
      return "warn";
    case Level::Error:
      return "error";
  }
  return "info";
}

void Value::appendTo(std::string& out) const {
  switch (kind_) {
    case Kind::String:
      appendJsonString(out, s_);
      break;
    case Kind::Int:
      appendNumber(out, i_);
      break;
    case Kind::Uint:
      appendNumber(out, u_);
      break;
    case Kind::Double:
      appendDouble(out, d_, -1);
      break;
    case Kind::Bool:
      out += b_ ? "true" : "false";
      break;
  }
}

std::string EventLog::format(int64_t unix_ms, Level level, std::string_view event, Fields fields) {
  std::string line;
  line.reserve(128);
  line += "{\"ts\":";
  appendJsonTimestamp(line, unix_ms);
  line += ",\"level\":\"";
  line += levelName(level);
  line += "\",\"event\":";
  appendJsonString(line, event);
  for (const Field& f : fields) {
    line += ',';
    appendJsonString(line, f.key);
    line += ':';
    f.value.appendTo(line);
  }
  line += '}';
  return line;
}

void EventLog::write(Level level, std::string_view event, Fields fields) {
  if (!enabled(level)) return;
  std::string line = format(wallClockMs(), level, event, fields);
  line += '\n';
  // One write(2) per line; the loop only runs on a partial write (a full pipe), which the mutex
  // then keeps from interleaving with another thread's line.
  std::lock_guard<std::mutex> lock(mutex_);
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report it
    off += static_cast<size_t>(n);
  }
}

EventLog& events() {
  static EventLog log(STDERR_FILENO);
  return log;
}

}  // namespace log

void formatAccessRecord(std::string& out, const AccessRecord& r) {
  out += "{\"ts\":";
  appendJsonTimestamp(out, r.ts_ms != 0 ? r.ts_ms : wallClockMs());
  out += ",\"request_id\":";
  appendJsonString(out, r.request_id);
  out += ",\"client\":";
  appendJsonString(out, r.client);
  if (!r.client_cert.empty()) {
    out += ",\"client_cert\":";
    appendJsonString(out, r.client_cert);
  }
  out += ",\"method\":";
  appendJsonString(out, r.method);
  out += ",\"path\":";
  appendJsonString(out, r.path);
  out += ",\"route\":";
  appendJsonString(out, r.route);
  out += ",\"backend\":";
  appendJsonString(out, r.backend);
  out += ",\"endpoint\":";
  appendJsonString(out, r.endpoint);
  out += ",\"status\":";
  appendNumber(out, static_cast<unsigned>(r.status));
  out += ",\"duration_ms\":";
  appendDouble(out, r.duration_ms, 3);
  out += ",\"upstream_ms\":";
  if (r.upstream_ms < 0) {
    out += "null";
  } else {
    appendDouble(out, r.upstream_ms, 3);
  }
  out += ",\"bytes_in\":";
  appendNumber(out, r.bytes_in);
  out += ",\"bytes_out\":";
  appendNumber(out, r.bytes_out);
  out += ",\"attempts\":";
  appendNumber(out, static_cast<unsigned>(r.attempts));
  out += ",\"reason\":\"";
  out += reasonName(r.reason);  // fixed list of [a-z_] names: nothing to escape
  out += '"';
  if (!r.detail.empty()) {
    out += ",\"detail\":";
    appendJsonString(out, r.detail);
  }
  out += ",\"flags\":[";
  bool first = true;
  const auto flag = [&](bool on, std::string_view name) {
    if (!on) return;
    if (!first) out += ',';
    first = false;
    out += '"';
    out += name;
    out += '"';
  };
  flag(r.rate_limited_dry_run, "rate_limited_dry_run");
  flag(r.failover, "failover");
  flag(r.retry_refused, "retry_refused");
  flag(r.override_refused, "override_refused");
  flag(r.client_aborted, "client_aborted");
  out += "]}\n";
}

std::shared_ptr<AccessLogSink> AccessLogSink::open(const std::string& path, std::string& error) {
  if (path.empty() || path == "-") return std::make_shared<AccessLogSink>(STDOUT_FILENO, false);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = path + ": " + std::strerror(errno);
    return nullptr;
  }
  return std::make_shared<AccessLogSink>(fd, true);
}

AccessLogSink::~AccessLogSink() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

int AccessLogSink::writeAll(const char* data, size_t len) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t off = 0;
  while (off < len) {
    ssize_t n = ::write(fd_, data + off, len - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // A non-blocking stdout (inherited): wait for room. This is a pool thread, not a loop.
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    return n < 0 ? -errno : -EIO;
  }
  return 0;
}

AccessLog::AccessLog(uv_loop_t* loop, std::shared_ptr<AccessLogSink> sink, Options options)
    : loop_(loop), sink_(std::move(sink)), options_(options), rng_(options.seed | 1) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  work_.data = this;
  uv_timer_start(&timer_, onTimer, options_.flush_interval_ms, options_.flush_interval_ms);
  // The timer alone must not keep a worker's loop running; writes in flight do.
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
}

AccessLog::~AccessLog() {
  if (!timer_closed_ || writing_) {
    std::fputs("cutover: AccessLog destroyed before its close() completed\n", stderr);
    std::abort();
  }
}

void AccessLog::configure(config::AccessLog::Mode mode, double sample) {
  options_.mode = mode;
  options_.sample = sample;
}

bool AccessLog::wants(uint16_t status, Reason reason) {
  using Mode = config::AccessLog::Mode;
  switch (options_.mode) {
    case Mode::Off:
      return false;
    case Mode::All:
      return true;
    case Mode::ErrorsOnly:
      return status >= 500 || status == 0 || reason != Reason::None;
    case Mode::Sampled: {
      // xorshift64*: a per-worker PRNG, no shared state.
      rng_ ^= rng_ >> 12;
      rng_ ^= rng_ << 25;
      rng_ ^= rng_ >> 27;
      const uint64_t x = rng_ * 0x2545f4914f6cdd1dULL;
      return static_cast<double>(x >> 11) * 0x1.0p-53 < options_.sample;
    }
  }
  return false;
}

bool AccessLog::append(const AccessRecord& record) {
  if (!wants(record.status, record.reason)) return false;
  appendUnfiltered(record);
  return true;
}

void AccessLog::appendUnfiltered(const AccessRecord& record) {
  if (timer_closed_) {
    ++dropped_;
    if (sink_) sink_->noteDropped();
    return;
  }
  const size_t before = active_.size();
  formatAccessRecord(active_, record);
  if (active_.size() > options_.max_backlog) {
    // The writer is behind (slow disk or stdout reader): keep the loop fast, lose this line.
    active_.resize(before);
    ++dropped_;
    if (sink_) sink_->noteDropped();
    return;
  }
  if (!writing_ && active_.size() >= options_.flush_bytes) flush();
}

void AccessLog::flush() {
  if (writing_ || active_.empty()) return;
  std::swap(active_, inflight_);
  active_.clear();
  writing_ = true;
  if (uv_queue_work(loop_, &work_, onWork, onWorkDone) != 0) {
    writing_ = false;
    ++write_errors_;
    inflight_.clear();
  }
}

void AccessLog::onTimer(uv_timer_t* timer) { static_cast<AccessLog*>(timer->data)->flush(); }

void AccessLog::onWork(uv_work_t* req) {
  auto* self = static_cast<AccessLog*>(req->data);
  self->write_result_ = self->sink_->writeAll(self->inflight_.data(), self->inflight_.size());
}

void AccessLog::onWorkDone(uv_work_t* req, int status) {
  auto* self = static_cast<AccessLog*>(req->data);
  self->writing_ = false;
  self->inflight_.clear();
  if (status != 0 || self->write_result_ != 0) {
    if (self->write_errors_++ == 0) {
      log::warn("access_log_write_failed",
                {{"error", uv_strerror(status != 0 ? status : self->write_result_)}});
    }
  }
  if (self->closing_) {
    self->maybeFinishClose();
  } else if (self->active_.size() >= self->options_.flush_bytes) {
    self->flush();
  }
}

void AccessLog::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  done_ = std::move(done);
  uv_timer_stop(&timer_);
  maybeFinishClose();
}

void AccessLog::maybeFinishClose() {
  if (writing_) return;  // onWorkDone comes back here
  if (!active_.empty()) {
    flush();
    if (writing_) return;
  }
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onTimerClosed);
  }
}

void AccessLog::onTimerClosed(uv_handle_t* handle) {
  auto* self = static_cast<AccessLog*>(handle->data);
  self->timer_closed_ = true;
  std::function<void()> done = std::move(self->done_);
  if (done) done();  // may destroy *self: nothing after this line
}

}  // namespace cutover
