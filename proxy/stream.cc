#include "proxy/stream.h"

#include <cstring>

#include "filters/backoff.h"
#include "filters/circuit_breaker.h"
#include "filters/health_state.h"
#include "filters/retry_budget.h"
#include "filters/token_bucket.h"
#include "proxy/clock.h"
#include "proxy/downstream_connection.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/path_normalize.h"
#include "proxy/stats.h"
#include "proxy/router.h"
#include "proxy/worker.h"

namespace cutover {

namespace {

void appendUint(std::string& out, uint64_t v) {
  char buf[24];
  int i = 0;
  do {
    buf[i++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (i > 0) out.push_back(buf[--i]);
}

// Header names that never cross the proxy (RFC 9110 §7.6.1), besides those named in Connection.
bool hopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return iequals(name, "te");
    case 7: return iequals(name, "upgrade") || iequals(name, "trailer");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

// Tokens of every Connection header (the headers they name are hop-by-hop too).
struct ConnectionTokens {
  std::string_view items[8];
  size_t n = 0;
  bool overflow = false;
  void parse(const HeaderMap& h) {
    for (size_t i = 0; i < h.size(); ++i) {
      if (h.removed(i) || !iequals(h.name(i), "connection")) continue;
      std::string_view v = h.value(i);
      while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view t = v.substr(0, comma);
        while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
        while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
        if (!t.empty()) {
          if (n < 8) {
            items[n++] = t;
          } else {
            overflow = true;
          }
        }
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
      }
    }
  }
  bool names(std::string_view header) const {
    for (size_t i = 0; i < n; ++i) {
      if (iequals(items[i], header)) return true;
    }
    return false;
  }
};

bool statusHasNoBody(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

}  // namespace

Stream::Stream(Worker& w) : worker_(w) {
  uv_timer_init(w.loop(), &timer_);
  timer_.data = this;
}

Stream::~Stream() = default;

void Stream::closeHandles() {
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onTimerClosed);
}

void Stream::onTimerClosed(uv_handle_t* h) { delete static_cast<Stream*>(h->data); }

uv_loop_t* Stream::loop() { return worker_.loop(); }

const config::Route& Stream::route() const { return *route_; }

std::string_view Stream::clientAddress() const { return conn_->peer(); }

void Stream::reset() {
  conn_ = nullptr;
  req_ = nullptr;
  snap_.reset();
  route_ = nullptr;
  info_ = StreamInfo{};
  filters_.clear();
  next_filter_ = 0;
  response_headers_.clear();
  added_names_.clear();
  head_pending_ = false;
  if (head_buf_.capacity() > 16 * 1024) std::string().swap(head_buf_);
  if (body_buf_.capacity() > 64 * 1024) {
    std::string().swap(body_buf_);
  } else {
    body_buf_.clear();
  }
  up_ = nullptr;
  phase_ = Phase::Filters;
  deadline_ms_ = 0;
  backend_ = split_backend_ = endpoint_ = 0;
  in_filter_ = resume_pending_ = false;
  request_complete_ = upstream_request_done_ = body_started_ = false;
  response_started_ = response_complete_ = response_chunked_ = response_close_ = false;
  request_chunked_up_ = head_only_ = timer_for_backoff_ = false;
  upstream_paused_ = client_paused_ = upgrade_ = false;
  pending_acquired_ = force_fresh_ = fresh_retry_used_ = false;
  inflight_backend_ = budget_backend_ = retry_backend_ = -1;
}

// ---- request side ---------------------------------------------------------------------------

void Stream::start(DownstreamConnection* conn, RequestHead& head) {
  conn_ = conn;
  req_ = &head;
  snap_ = worker_.snapshot();
  info_.start_ns = monotonicNs();
  head_only_ = head.method == "HEAD";
  upgrade_ = head.upgrade;
  request_chunked_up_ = head.chunked;
  if (!head.keep_alive || worker_.draining()) response_close_ = true;

  const config::Config& cfg = *snap_->config;
  // Routes, filters and the backend all see the normalised path (proxy/path_normalize.h).
  if (normalizePath(head.target, cfg.http) == PathStatus::Invalid) {
    localReply(400, Reason::InvalidPath);
    return;
  }
  // No route is answered by the router at the end of the chain (404), so the filters still run:
  // the request gets its id, shows in logs like any other, and limits can see it.
  int r = matchRoute(cfg, head);
  if (r >= 0) {
    route_ = &cfg.routes[static_cast<size_t>(r)];
    info_.route = r;
  }
  config::Duration total =
      route_ != nullptr ? route_->request_timeout.value_or(cfg.timeouts.request) : cfg.timeouts.request;
  deadline_ms_ = worker_.nowMs() + total.count();
  armRequestTimer();

  filters_.reserve(snap_->filters.size());
  for (const auto& f : snap_->filters) filters_.push_back(f->create());
  runFilters();
}

void Stream::armRequestTimer() {
  int64_t left = deadline_ms_ - worker_.nowMs();
  uv_timer_start(&timer_, onTimer, static_cast<uint64_t>(left > 0 ? left : 0), 0);
}

void Stream::runFilters() {
  phase_ = Phase::Filters;
  while (next_filter_ < filters_.size()) {
    in_filter_ = true;
    FilterStatus st = filters_[next_filter_]->onRequest(*this);
    in_filter_ = false;
    ++next_filter_;
    if (st == FilterStatus::Responded || response_complete_) {
      // (A filter that answered but said Continue is treated as having said Responded.)
      maybeFinish();
      return;
    }
    if (st == FilterStatus::Paused) return;  // the filter calls resume() or localReply() later
  }
  route();
}

void Stream::resume() {
  if (phase_ != Phase::Filters) return;
  runFilters();
}

void Stream::onUpstreamConnected() {
  releasePending();
  sendRequestHead();
}

void Stream::sendRequestHead() {
  phase_ = Phase::Sending;
  const config::Config& cfg = *snap_->config;
  up_->beginExchange(req_->method, static_cast<uint32_t>(cfg.timeouts.upstream_idle.count()));

  std::string& out = worker_.scratch();
  out.clear();
  out.append(req_->method);
  out.push_back(' ');
  out.append(req_->target);
  out.append(" HTTP/1.1\r\n");
  ConnectionTokens conn_tokens;
  conn_tokens.parse(req_->headers);
  const HeaderMap& h = req_->headers;
  // The client's address is appended to the last X-Forwarded-For line (or starts one).
  size_t last_xff = h.size();
  for (size_t i = 0; i < h.size(); ++i) {
    if (!h.removed(i) && iequals(h.name(i), "x-forwarded-for")) last_xff = i;
  }
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    bool keep_upgrade = upgrade_ && iequals(name, "upgrade");
    if (hopByHop(name) && !keep_upgrade) continue;
    if (conn_tokens.names(name) && !keep_upgrade) continue;
    if (iequals(name, "expect") || iequals(name, "x-forwarded-proto")) continue;
    out.append(name).append(": ").append(h.value(i));
    if (i == last_xff) out.append(", ").append(conn_->peer());
    out.append("\r\n");
  }
  if (last_xff == h.size()) out.append("X-Forwarded-For: ").append(conn_->peer()).append("\r\n");
  out.append("X-Forwarded-Proto: http\r\n");
  if (request_chunked_up_) out.append("Transfer-Encoding: chunked\r\n");
  if (upgrade_) out.append("Connection: upgrade\r\n");
  out.append("\r\n");
  up_->write(out);

  if (!body_buf_.empty()) {
    writeBodyToUpstream(body_buf_.data(), body_buf_.size());
    body_buf_.clear();
  }
  if (request_complete_) finishUpstreamRequest();
  if (client_paused_ && up_ != nullptr && up_->pendingBytes() < cfg.limits.high_watermark) {
    client_paused_ = false;
    conn_->resumeReading();
  }
}

void Stream::writeBodyToUpstream(const char* data, size_t len) {
  if (len == 0 || up_ == nullptr) return;
  body_started_ = true;
  if (request_chunked_up_) {
    std::string& out = worker_.scratch();
    out.clear();
    appendChunkHeader(out, len);
    out.append(data, len);
    out.append(kCrlf);
    up_->write(out);
  } else {
    up_->write(data, len);
  }
  if (up_->pendingBytes() > snap_->config->limits.high_watermark && !client_paused_) {
    client_paused_ = true;
    conn_->pauseReading();
  }
}

void Stream::finishUpstreamRequest() {
  if (upstream_request_done_ || up_ == nullptr) return;
  upstream_request_done_ = true;
  if (request_chunked_up_) up_->write(kChunkEnd);
}

void Stream::onRequestBody(const char* data, size_t len) {
  info_.bytes_in += len;
  switch (phase_) {
    case Phase::Sending:
    case Phase::Responding:
      if (!response_complete_) writeBodyToUpstream(data, len);
      return;
    case Phase::Filters:
    case Phase::Routing:
    case Phase::Connecting:
      // Held until the upstream connection is ready; bounded by the high watermark.
      body_buf_.append(data, len);
      if (body_buf_.size() > snap_->config->limits.high_watermark && !client_paused_) {
        client_paused_ = true;
        conn_->pauseReading();
      }
      return;
    default:
      return;  // answered locally: the rest of the body is discarded
  }
}

void Stream::onRequestComplete() {
  request_complete_ = true;
  if (phase_ == Phase::Sending || phase_ == Phase::Responding) finishUpstreamRequest();
  if (phase_ != Phase::Done && !in_filter_) maybeFinish();
}

void Stream::onUpstreamDrained() {
  if (client_paused_) {
    client_paused_ = false;
    conn_->resumeReading();
  }
}

void Stream::onDownstreamDrained() {
  if (upstream_paused_ && up_ != nullptr) {
    upstream_paused_ = false;
    up_->resumeReading();
  }
}

// ---- response side --------------------------------------------------------------------------

void Stream::onUpstreamHead(ResponseHead& head) {
  info_.upstream_headers_ns = monotonicNs();
  recordOutcome(Outcome::Status, head.status);
  if (route_->retry.enabled) {
    std::optional<config::Duration> retry_after;
    std::string_view ra = head.headers.get("retry-after");
    if (!ra.empty() && ra.size() < 6 && ra.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_after = std::chrono::seconds(std::stoi(std::string(ra)));
    }
    if (retryAfterFailure(Outcome::Status, head.status, retry_after)) {
      // Drop this answer with its connection; the retry timer is running.
      UpstreamConnection* up = up_;
      up_ = nullptr;
      up->close();
      return;
    }
  }
  phase_ = Phase::Responding;
  // Filters see the response in reverse order, only those whose onRequest ran.
  for (size_t i = next_filter_; i > 0; --i) filters_[i - 1]->onResponse(*this, head);
  if (head.status == 101) {
    if (!upgrade_) {
      failUpstream(Failure::BadResponse);
      return;
    }
    writeResponseHead(head);
    phase_ = Phase::Tunnel;
    up_->startTunnel();
    conn_->startTunnel(up_);
    return;
  }
  if (upgrade_) response_close_ = true;  // the backend declined the upgrade
  writeResponseHead(head);
}

void Stream::writeResponseHead(ResponseHead& head) {
  const config::Config& cfg = *snap_->config;
  info_.status = head.status;
  bool client11 = req_->version_minor >= 1;
  bool no_body = head_only_ || statusHasNoBody(head.status);
  response_chunked_ = false;
  if (!no_body && !head.has_content_length) {
    // Chunked or read-until-close from the backend: re-chunk for 1.1 clients; 1.0 clients get a
    // close-delimited body.
    if (client11) {
      response_chunked_ = true;
    } else {
      response_close_ = true;
    }
  }
  if (worker_.draining()) response_close_ = true;

  // Held back until the first body bytes (or the end of this read) so both leave in one write.
  std::string& out = head_buf_;
  out.clear();
  out.append("HTTP/1.1 ");
  appendUint(out, head.status);
  out.push_back(' ');
  out.append(head.reason.empty() ? reasonPhrase(head.status) : std::string_view(head.reason));
  out.append("\r\n");
  ConnectionTokens conn_tokens;
  conn_tokens.parse(head.headers);
  const HeaderMap& h = head.headers;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    bool keep_upgrade = head.status == 101 && iequals(name, "upgrade");
    if (hopByHop(name) && !keep_upgrade) continue;
    if (conn_tokens.names(name) && !keep_upgrade) continue;
    if (iequals(name, "x-cutover-backend")) continue;
    // A filter's header replaces the backend's (e.g. the request id the backend echoed).
    if (!added_names_.empty() && addedByFilter(name)) continue;
    out.append(name).append(": ").append(h.value(i)).append("\r\n");
  }
  if (head_only_ && head.chunked) out.append("Transfer-Encoding: chunked\r\n");
  if (response_chunked_) out.append("Transfer-Encoding: chunked\r\n");
  out.append("x-cutover-backend: ").append(cfg.backends[backend_].name).append("\r\n");
  if (info_.attempts > 1) {
    out.append("x-cutover-attempts: ");
    appendUint(out, info_.attempts);
    out.append("\r\n");
  }
  out.append(response_headers_);
  if (head.status == 101) {
    out.append("Connection: upgrade\r\n");
  } else if (response_close_) {
    out.append("Connection: close\r\n");
  } else if (!client11) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
  response_started_ = true;
  head_pending_ = true;
  if (head.status == 101) flushHead({});
}

void Stream::flushHead(std::string_view first_body) {
  if (!head_pending_) {
    if (!first_body.empty()) conn_->transport().write(first_body);
    return;
  }
  head_pending_ = false;
  conn_->transport().write2(head_buf_, first_body);
}

void Stream::onUpstreamReadDone() { flushHead({}); }

void Stream::onUpstreamBody(const char* data, size_t len) {
  info_.bytes_out += len;
  if (head_only_) return;
  Transport& t = conn_->transport();
  if (response_chunked_) {
    std::string& out = worker_.scratch();
    out.clear();
    appendChunkHeader(out, len);
    out.append(data, len);
    out.append(kCrlf);
    flushHead(out);
  } else {
    flushHead(std::string_view(data, len));
  }
  if (t.pendingBytes() > snap_->config->limits.high_watermark && !upstream_paused_ &&
      up_ != nullptr) {
    upstream_paused_ = true;
    up_->pauseReading();
  }
}

void Stream::onUpstreamComplete() {
  flushHead(response_chunked_ ? kChunkEnd : std::string_view());
  response_complete_ = true;
  UpstreamConnection* up = up_;
  up_ = nullptr;
  // Reusable only if it carried a whole request and the backend keeps it alive.
  up->release(upstream_request_done_ && up->state() == UpstreamConnection::State::Active &&
              !upgrade_);
  maybeFinish();
}

// ---- failures and retries -------------------------------------------------------------------

void Stream::onTimer(uv_timer_t* t) {
  auto* self = static_cast<Stream*>(t->data);
  if (self->phase_ == Phase::Done || self->phase_ == Phase::Tunnel) return;
  if (self->timer_for_backoff_) {
    // Backoff over: the next attempt, under the same total deadline.
    self->timer_for_backoff_ = false;
    self->armRequestTimer();
    Reason why = self->admit(self->backend_, monotonicNs());
    if (why != Reason::None) {
      self->localReply(503, why);
      return;
    }
    self->startAttempt();
    return;
  }
  // Total request deadline passed.
  if (self->up_ != nullptr) {
    self->up_->close();
    self->up_ = nullptr;
  }
  if (self->phase_ == Phase::Filters && self->next_filter_ > 0) {
    self->filters_[self->next_filter_ - 1]->onCancel();  // the filter that paused
  }
  if (self->response_started_) {
    self->response_close_ = true;
    self->info_.reason = Reason::RequestTimeout;
    self->finish();
    return;
  }
  self->localReply(504, Reason::RequestTimeout);
}

// ---- local replies and completion -----------------------------------------------------------

void Stream::addResponseHeader(std::string_view name, std::string_view value) {
  added_names_.push_back({static_cast<uint32_t>(response_headers_.size()),
                          static_cast<uint32_t>(name.size())});
  response_headers_.append(name).append(": ").append(value).append("\r\n");
}

bool Stream::addedByFilter(std::string_view name) const {
  for (const auto& [off, len] : added_names_) {
    if (iequals(std::string_view(response_headers_).substr(off, len), name)) return true;
  }
  return false;
}

void Stream::localReply(int status, Reason reason, std::string_view extra,
                        std::string_view body) {
  if (phase_ == Phase::Done) return;
  info_.reason = reason;
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
  if (response_started_) {
    response_close_ = true;
    finish();
    return;
  }
  // A request whose body is still arriving cannot share the connection with the next one (a
  // bodyless request completes right after its head, so it keeps the connection).
  if (!request_complete_ && (req_ == nullptr || req_->hasBody() || upgrade_)) {
    response_close_ = true;
  }
  writeLocalReply(status, reason, extra, body);
  response_complete_ = true;
  phase_ = Phase::Responding;
  if (!in_filter_) maybeFinish();
}

void Stream::writeLocalReply(int status, Reason reason, std::string_view extra,
                             std::string_view body) {
  info_.status = static_cast<uint16_t>(status);
  if (worker_.draining()) response_close_ = true;
  std::string text;
  if (body.empty()) {
    text.append(reasonPhrase(status)).append(" (").append(reasonName(reason)).append(")\n");
    body = text;
  }
  std::string& out = worker_.scratch();
  out.clear();
  out.append("HTTP/1.1 ");
  appendUint(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reasonPhrase(status));
  out.append("\r\nContent-Type: text/plain\r\nContent-Length: ");
  appendUint(out, body.size());
  out.append("\r\nx-cutover-reason: ").append(reasonName(reason)).append("\r\n");
  if (info_.backend >= 0 && snap_ != nullptr) {
    out.append("x-cutover-backend: ")
        .append(snap_->config->backends[static_cast<size_t>(info_.backend)].name)
        .append("\r\n");
  }
  if (info_.attempts > 1) {
    out.append("x-cutover-attempts: ");
    appendUint(out, info_.attempts);
    out.append("\r\n");
  }
  out.append(extra);
  out.append(response_headers_);
  out.append(response_close_ ? "Connection: close\r\n" : "");
  out.append("\r\n");
  if (!head_only_) out.append(body);
  response_started_ = true;
  conn_->transport().write(out);
}

void Stream::maybeFinish() {
  if (phase_ == Phase::Done || !response_complete_) return;
  if (!request_complete_ && !response_close_) return;
  finish();
}

void Stream::finish() {
  if (phase_ == Phase::Done) return;
  phase_ = Phase::Done;
  uv_timer_stop(&timer_);
  if (up_ != nullptr) {
    up_->close();
    up_ = nullptr;
  }
  info_.end_ns = monotonicNs();
  releasePending();
  endRetry();
  if (inflight_backend_ >= 0) {
    const BackendRuntime& rt = snap_->backends[static_cast<size_t>(inflight_backend_)];
    if (rt.limits) rt.limits->releaseInflight();
  }
  if (budget_backend_ >= 0) {
    const BackendRuntime& rt = snap_->backends[static_cast<size_t>(budget_backend_)];
    if (rt.budget) rt.budget->endRequest();
  }
  for (auto& f : filters_) f->onComplete(info_);
  if (snap_->metrics) snap_->metrics->recordRequest(info_);
  if (snap_->stats) snap_->stats->record(info_);
  writeAccessLog();
  bool reusable = response_complete_ && request_complete_ && !response_close_;
  DownstreamConnection* conn = conn_;
  reset();
  conn->onStreamDone(reusable);  // may release this stream: nothing after this line
}

void Stream::writeAccessLog() {
  AccessLog* log = worker_.accessLog();
  if (log == nullptr || req_ == nullptr || !log->wants(info_.status, info_.reason)) return;
  const config::Config& cfg = *snap_->config;
  AccessRecord rec;
  rec.request_id = req_->headers.get("x-request-id");
  rec.client = conn_->peer();
  rec.method = req_->method;
  rec.path = req_->target;
  if (route_ != nullptr) rec.route = route_->name;
  if (info_.backend >= 0) {
    const config::Backend& be = cfg.backends[static_cast<size_t>(info_.backend)];
    rec.backend = be.name;
    if (info_.endpoint >= 0 && static_cast<size_t>(info_.endpoint) < be.endpoints.size()) {
      rec.endpoint = be.endpoints[static_cast<size_t>(info_.endpoint)].text;
    }
  }
  rec.status = info_.status;
  rec.duration_ms = static_cast<double>(info_.end_ns - info_.start_ns) / 1e6;
  if (info_.upstream_headers_ns > 0 && info_.upstream_start_ns > 0) {
    rec.upstream_ms = static_cast<double>(info_.upstream_headers_ns - info_.upstream_start_ns) / 1e6;
  }
  rec.bytes_in = info_.bytes_in;
  rec.bytes_out = info_.bytes_out;
  rec.attempts = info_.attempts;
  rec.reason = info_.reason;
  rec.rate_limited_dry_run = info_.rate_limited_dry_run;
  rec.failover = info_.failover;
  rec.client_aborted = info_.client_aborted;
  log->appendUnfiltered(rec);
}

void Stream::onRequestError(int status) {
  if (phase_ == Phase::Done) return;
  response_close_ = true;
  if (response_started_) {
    finish();
    return;
  }
  localReply(status, status == 431 ? Reason::HeadersTooLarge : Reason::BadRequest);
}

void Stream::onDownstreamGone() {
  if (phase_ == Phase::Done) return;
  info_.client_aborted = true;
  if (phase_ == Phase::Filters && next_filter_ > 0 && next_filter_ <= filters_.size()) {
    filters_[next_filter_ - 1]->onCancel();
  }
  response_close_ = true;
  finish();
}

// ---- tunnel ---------------------------------------------------------------------------------

void Stream::tunnelData(const char* data, size_t len) {
  if (up_ == nullptr) return;
  info_.bytes_in += len;
  up_->write(data, len);
  if (up_->pendingBytes() > snap_->config->limits.high_watermark && !client_paused_) {
    client_paused_ = true;
    conn_->pauseReading();
  }
}

void Stream::onUpstreamTunnelData(const char* data, size_t len) {
  info_.bytes_out += len;
  Transport& t = conn_->transport();
  t.write(data, len);
  if (t.pendingBytes() > snap_->config->limits.high_watermark && !upstream_paused_ &&
      up_ != nullptr) {
    upstream_paused_ = true;
    up_->pauseReading();
  }
}

void Stream::onUpstreamTunnelClosed() { endTunnel(); }

void Stream::tunnelClientClosed() { endTunnel(); }

void Stream::endTunnel() {
  // Either side ending ends the tunnel: close the backend side, then the client's.
  if (up_ != nullptr) {
    UpstreamConnection* up = up_;
    up_ = nullptr;
    up->close();
  }
  response_complete_ = true;
  response_close_ = true;
  finish();
}

}  // namespace cutover
