#include "proxy/stream.h"

#include <algorithm>
#include <cstring>

#include "common/client_address.h"
#include "common/clock.h"
#include "common/path_normalize.h"
#include "http/http1_writer.h"
#include "proxy/downstream_connection.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/router.h"
#include "proxy/stats.h"

namespace cutover {

namespace {

bool statusHasNoBody(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

}  // namespace

Stream::Stream(StreamContext& ctx)
    : ctx_(ctx), router_(ctx.loop(), ctx.rng(), *this), upstream_(ctx.upstreamContext(), router_) {
  router_.setAttempt(upstream_);
  uv_timer_init(ctx.loop(), &timer_);
  timer_.data = this;
}

Stream::~Stream() { destroyFilters(); }

void Stream::closeHandles() {
  handles_open_ = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onTimerClosed);
  router_.close(onTimerClosed, this);
}

void Stream::onTimerClosed(uv_handle_t* h) {
  auto* self = static_cast<Stream*>(h->data);
  if (--self->handles_open_ == 0) delete self;
}

uv_loop_t* Stream::loop() { return ctx_.loop(); }

const config::Route& Stream::route() const { return *route_; }

std::string_view Stream::clientAddress() const { return client_address_; }

std::string_view Stream::clientCertSubject() const {
  return conn_ != nullptr ? std::string_view(conn_->clientCertSubject()) : std::string_view();
}

void Stream::reset() {
  conn_ = nullptr;
  req_ = nullptr;
  snap_.reset();
  route_ = nullptr;
  client_address_ = {};
  forwarded_proto_ = "http";
  info_ = StreamInfo{};
  destroyFilters();
  next_filter_ = 0;
  response_headers_.clear();
  added_names_.clear();
  head_pending_ = false;
  if (head_buf_.capacity() > 16 * 1024) std::string().swap(head_buf_);
  router_.reset();
  phase_ = Phase::Filters;
  deadline_ms_ = 0;
  in_filter_ = false;
  request_complete_ = false;
  response_started_ = response_complete_ = response_chunked_ = response_close_ = false;
  head_only_ = false;
  client_paused_ = upgrade_ = false;
}

// ---- request side ---------------------------------------------------------------------------

void Stream::start(DownstreamConnection* conn, RequestHead& head) {
  conn_ = conn;
  req_ = &head;
  snap_ = ctx_.snapshot();
  info_.start_ns = monotonicNs();
  head_only_ = head.method == "HEAD";
  upgrade_ = head.upgrade;
  if (!head.keep_alive || ctx_.draining()) response_close_ = true;

  const config::Config& cfg = *snap_->config;
  // The real client behind trusted proxies: rate-limit keys, sticky client_ip and the access log
  // use it; X-Forwarded-For still gets the TCP peer appended, and a trusted peer's
  // X-Forwarded-Proto (http or https) is kept.
  ClientAddress client = resolveClientAddress(conn_->peer(), head.headers, cfg.http.trusted);
  client_address_ = client.address;
  if (client.from_xff) {
    // Copied: a view into the head's storage would dangle once a filter adds a header. An entry
    // that parsed as an IP address fits (INET6_ADDRSTRLEN).
    size_t n = std::min(client.address.size(), sizeof client_buf_);
    std::memcpy(client_buf_, client.address.data(), n);
    client_address_ = std::string_view(client_buf_, n);
  }
  forwarded_proto_ = "http";
  if (conn_->secure()) {
    forwarded_proto_ = "https";
  } else if (client.peer_trusted) {
    // The trusted proxy's value is the last one (a client's own line comes before it); of a
    // list, the last element.
    std::string_view proto;
    for (size_t i = 0; i < head.headers.size(); ++i) {
      if (!head.headers.removed(i) && tokenIs(head.headers.name(i), "x-forwarded-proto")) {
        proto = head.headers.value(i);
      }
    }
    size_t comma = proto.rfind(',');
    if (comma != std::string_view::npos) proto.remove_prefix(comma + 1);
    while (!proto.empty() && (proto.front() == ' ' || proto.front() == '\t'))
      proto.remove_prefix(1);
    if (iequals(proto, "https")) forwarded_proto_ = "https";
  }
  if (const config::ListenerTls* tls = conn_->tlsConfig(); tls != nullptr) {
    // Only we say who the client certificate belongs to: the client's own header never passes.
    head.headers.remove(tls->client_subject_header);
    if (!conn_->clientCertSubject().empty()) {
      head.headers.add(tls->client_subject_header, conn_->clientCertSubject());
    }
  }
  // Routes, filters and the backend all see the normalised path (common/path_normalize.h).
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
  config::Duration total = route_ != nullptr
                               ? route_->request_timeout.value_or(cfg.timeouts.request)
                               : cfg.timeouts.request;
  deadline_ms_ = ctx_.nowMs() + total.count();
  armRequestTimer();

  router_.bind(*snap_);
  createFilters();
  runFilters();
}

void Stream::createFilters() {
  // One block for the whole chain, each filter at a max_align_t boundary.
  constexpr size_t kSlot = sizeof(std::max_align_t);
  size_t slots = 0;
  for (const auto& f : snap_->filters) slots += (f->filterSize() + kSlot - 1) / kSlot;
  if (slots > filter_mem_slots_) {
    filter_mem_ = std::make_unique<std::max_align_t[]>(slots);
    filter_mem_slots_ = slots;
  }
  filters_.reserve(snap_->filters.size());
  std::max_align_t* at = filter_mem_.get();
  for (const auto& f : snap_->filters) {
    filters_.push_back(f->createAt(at));
    at += (f->filterSize() + kSlot - 1) / kSlot;
  }
}

void Stream::destroyFilters() {
  for (Filter* f : filters_) f->~Filter();
  filters_.clear();
}

void Stream::armRequestTimer() {
  int64_t left = deadline_ms_ - ctx_.nowMs();
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
  phase_ = Phase::Routing;
  ForwardInfo fwd;
  fwd.client_address = conn_->peer();
  fwd.proto = forwarded_proto_;
  router_.start(route_, *req_, info_, client_address_, fwd, deadline_ms_);
}

void Stream::resume() {
  if (phase_ != Phase::Filters) return;
  runFilters();
}

void Stream::pauseClient() {
  if (client_paused_) return;
  client_paused_ = true;
  conn_->pauseReading();
}

void Stream::resumeClient() {
  if (!client_paused_) return;
  client_paused_ = false;
  conn_->resumeReading();
}

void Stream::writeToClient(std::string_view bytes) {
  Transport& t = conn_->transport();
  t.write(bytes);
  if (t.pendingBytes() > snap_->config->limits.high_watermark) router_.pauseResponse();
}

void Stream::onRequestBody(const char* data, size_t len) {
  info_.bytes_in += len;
  // Once answered (locally or by the backend), the rest of the body is discarded.
  if (phase_ == Phase::Done || response_complete_) return;
  router_.onRequestBody(data, len);
}

void Stream::onRequestComplete() {
  request_complete_ = true;
  if (phase_ == Phase::Routing || phase_ == Phase::Responding) router_.onRequestComplete();
  if (phase_ != Phase::Done && !in_filter_) maybeFinish();
}

void Stream::onDownstreamDrained() { router_.resumeResponse(); }

// ---- response side --------------------------------------------------------------------------

void Stream::routerHead(ResponseHead& head) {
  phase_ = Phase::Responding;
  // Filters see the response in reverse order, only those whose onRequest ran.
  for (size_t i = next_filter_; i > 0; --i) filters_[i - 1]->onResponse(*this, head);
  if (head.status == 101) {
    writeResponseHead(head);
    phase_ = Phase::Tunnel;
    conn_->startTunnel(router_.startTunnel());
    return;
  }
  if (upgrade_) response_close_ = true;  // the backend declined the upgrade
  writeResponseHead(head);
}

void Stream::writeResponseHead(ResponseHead& head) {
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
  if (ctx_.draining()) response_close_ = true;

  BodyFraming framing;
  if (head.status < 200 || head.status == 204) {
    framing = BodyFraming::None;  // 101 (a tunnel follows) or 204: no body, no framing
  } else if (head_only_ || head.status == 304) {
    // No body follows, but the headers describe the one a GET would get.
    framing = head.chunked              ? BodyFraming::Chunked
              : head.has_content_length ? BodyFraming::Length
                                        : BodyFraming::None;
  } else if (response_chunked_) {
    framing = BodyFraming::Chunked;
  } else {
    framing = head.has_content_length ? BodyFraming::Length : BodyFraming::None;
  }
  // Held back until the first body bytes (or the end of this read) so both leave in one write.
  std::string& out = head_buf_;
  out.clear();
  // x-cutover-backend is ours; a filter's header replaces the backend's (e.g. the request id the
  // backend echoed).
  SkipHeader skip = [](const void* self, std::string_view name) {
    const auto* st = static_cast<const Stream*>(self);
    return tokenIs(name, "x-cutover-backend") ||
           (!st->added_names_.empty() && st->addedByFilter(name));
  };
  writeResponseStart(out, head, framing, skip, this);
  appendProxyHeaders(out);
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

void Stream::routerBody(const char* data, size_t len) {
  info_.bytes_out += len;
  if (head_only_) return;
  Transport& t = conn_->transport();
  if (response_chunked_) {
    std::string& out = ctx_.scratch();
    out.clear();
    appendChunkHeader(out, len);
    out.append(data, len);
    out.append(kCrlf);
    flushHead(out);
  } else {
    flushHead(std::string_view(data, len));
  }
  if (t.pendingBytes() > snap_->config->limits.high_watermark) router_.pauseResponse();
}

void Stream::routerComplete() {
  flushHead(response_chunked_ ? kChunkEnd : std::string_view());
  response_complete_ = true;
  maybeFinish();
}

// ---- failures and retries -------------------------------------------------------------------

void Stream::onTimer(uv_timer_t* t) {
  auto* self = static_cast<Stream*>(t->data);
  if (self->phase_ == Phase::Done || self->phase_ == Phase::Tunnel) return;
  // Total request deadline passed (a pending backoff ends with the request).
  self->router_.abandon(AttemptOutcome::Timeout);
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
  added_names_.push_back(
      {static_cast<uint32_t>(response_headers_.size()), static_cast<uint32_t>(name.size())});
  response_headers_.append(name).append(": ").append(value).append("\r\n");
}

void Stream::appendResponseHeader(std::string_view name, std::string_view value) {
  response_headers_.append(name).append(": ").append(value).append("\r\n");
}

bool Stream::addedByFilter(std::string_view name) const {
  for (const auto& [off, len] : added_names_) {
    if (iequals(std::string_view(response_headers_).substr(off, len), name)) return true;
  }
  return false;
}

void Stream::localReply(int status, Reason reason, std::string_view extra, std::string_view body) {
  if (phase_ == Phase::Done) return;
  info_.reason = reason;
  router_.abandon();
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

void Stream::appendProxyHeaders(std::string& out) const {
  // Which backend served (or was last tried), as the router recorded it in StreamInfo, and how
  // many attempts it took when more than one: on backend responses and local replies alike.
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
}

void Stream::writeLocalReply(int status, Reason reason, std::string_view extra,
                             std::string_view body) {
  info_.status = static_cast<uint16_t>(status);
  if (ctx_.draining()) response_close_ = true;
  std::string& out = ctx_.scratch();
  out.clear();
  writeLocalReplyStart(out, status, reasonName(reason), body);
  appendProxyHeaders(out);
  out.append(extra);
  out.append(response_headers_);
  writeLocalReplyEnd(out, status, reasonName(reason), body, response_close_, head_only_);
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
  router_.reset();  // drops the attempt and gives back every slot the request held on backends
  info_.end_ns = monotonicNs();
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
  AccessLog* log = ctx_.accessLog();
  if (log == nullptr || req_ == nullptr || !log->wants(info_.status, info_.reason)) return;
  const config::Config& cfg = *snap_->config;
  AccessRecord rec;
  rec.request_id = req_->headers.get("x-request-id");
  rec.client = client_address_.empty() ? std::string_view(conn_->peer()) : client_address_;
  rec.client_cert = conn_->clientCertSubject();
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
    rec.upstream_ms =
        static_cast<double>(info_.upstream_headers_ns - info_.upstream_start_ns) / 1e6;
  }
  rec.bytes_in = info_.bytes_in;
  rec.bytes_out = info_.bytes_out;
  rec.attempts = info_.attempts;
  rec.reason = info_.reason;
  rec.rate_limited_dry_run = info_.rate_limited_dry_run;
  rec.failover = info_.failover;
  rec.retry_refused = info_.retry_refused;
  rec.override_refused = info_.override_refused;
  rec.client_aborted = info_.client_aborted;
  log->appendUnfiltered(rec);
}

void Stream::onRequestError(int status) {
  if (phase_ == Phase::Done) return;
  Reason reason = status == 431   ? Reason::HeadersTooLarge
                  : status == 413 ? Reason::PayloadTooLarge
                                  : Reason::BadRequest;
  response_close_ = true;
  if (response_started_) {
    info_.reason = reason;  // the response is cut; the log and the metric say why
    finish();
    return;
  }
  localReply(status, reason);
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

void Stream::onDrainDeadline() {
  if (phase_ == Phase::Done) return;
  // No reply even if none started: the connection is closed at once (a write would be cancelled).
  info_.reason = Reason::Draining;
  if (phase_ == Phase::Filters && next_filter_ > 0 && next_filter_ <= filters_.size()) {
    filters_[next_filter_ - 1]->onCancel();
  }
  response_close_ = true;
  finish();
}

// ---- tunnel ---------------------------------------------------------------------------------

void Stream::tunnelData(const char* data, size_t len) {
  if (!router_.tunnelOpen()) return;
  info_.bytes_in += len;
  router_.tunnelWrite(data, len);
}

void Stream::routerResponseCut(Reason reason) {
  response_close_ = true;
  info_.reason = reason;
  finish();
}

void Stream::tunnelClientClosed() { endTunnel(); }

bool Stream::closeTunnelIfOffStable() {
  if (phase_ != Phase::Tunnel || route_ == nullptr || !route_->stable || info_.backend < 0 ||
      static_cast<uint32_t>(info_.backend) == *route_->stable) {
    return false;
  }
  endTunnel();
  return true;
}

void Stream::closeTunnel(Reason why) {
  if (phase_ != Phase::Tunnel) return;
  info_.reason = why;
  endTunnel();
}

void Stream::endTunnel() {
  // Either side ending ends the tunnel: close the backend side, then the client's.
  router_.abandon();
  response_complete_ = true;
  response_close_ = true;
  finish();
}

}  // namespace cutover
