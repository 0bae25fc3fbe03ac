#include "proxy/downstream_connection.h"

#include <algorithm>

#include "http/http1_writer.h"
#include "net/proxy_protocol.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/stats.h"
#include "proxy/stream.h"
#include "proxy/tls_metrics.h"

namespace cutover {

namespace {
// The local-reply reason for a request the decoder refused, by the status it chose.
Reason rejectReason(int status) {
  switch (status) {
    case 405:
      return Reason::MethodNotAllowed;
    case 408:
      return Reason::HeaderTimeout;
    case 413:
      return Reason::PayloadTooLarge;
    case 414:
      return Reason::UriTooLong;
    case 417:
      return Reason::ExpectationFailed;
    case 431:
      return Reason::HeadersTooLarge;
    case 505:
      return Reason::VersionNotSupported;
    default:
      return Reason::BadRequest;
  }
}
}  // namespace

namespace {
// Pipelined bytes buffered past the current request before we stop reading the client.
constexpr size_t kMaxPending = 64 * 1024;
// How long a closing connection keeps draining the client's input (lingering close) so that
// unread pipelined bytes do not turn our FIN into a reset that destroys the last response.
constexpr int64_t kLingerMs = 2000;
}  // namespace

DownstreamConnection::DownstreamConnection(ConnectionContext& ctx) : ctx_(ctx) {
  tcp_.setCallbacks(this);
}

DownstreamConnection::~DownstreamConnection() {
  if (decoder_ != nullptr) ctx_.releaseDecoder(decoder_);
}

void DownstreamConnection::start(uv_stream_t* server, bool proxy_protocol, int listener) {
  int rc = tcp_.accept(ctx_.loop(), server, ctx_.readBuffer(), ctx_.readBufferSize());
  if (rc != 0) {
    abort();
    return;
  }
  peer_ = tcp_.peerAddress();
  const std::shared_ptr<const Snapshot>& snap = ctx_.snapshot();
  if (listener >= 0 && static_cast<size_t>(listener) < snap->listener_tls.size() &&
      snap->listener_tls[listener] != nullptr) {
    tls_snap_ = snap;
    tls_cfg_ = &*snap->config->listeners[listener].tls;
    listener_ = listener;
  }
  if (!proxy_protocol) {
    if (tls_cfg_ != nullptr) {
      startTls(nullptr, 0);
    } else {
      becomeIdle();
    }
    return;
  }
  // The balancer's header comes first, within the head timeout like a request head would.
  state_ = State::ProxyHeader;
  deadline_ms = ctx_.nowMs() + ctx_.snapshot()->config->timeouts.header_read.count();
  ctx_.moveConnection(this, ConnectionContext::List::Header);
  transport_->readStart();
}

void DownstreamConnection::onProxyHeaderData(const char* data, size_t len) {
  // Usually the whole header arrives in the first read; only a split one is buffered.
  std::unique_ptr<std::string> buf = std::move(pending_);
  if (buf) {
    buf->append(data, len);
    data = buf->data();
    len = buf->size();
  }
  ProxyHeader header;
  size_t used = 0;
  ProxyParse r = parseProxyHeader(data, len, header, used);
  if (r == ProxyParse::NeedMore && len < kMaxProxyHeader) {
    pending_ = buf ? std::move(buf) : std::make_unique<std::string>(data, len);
    return;
  }
  if (r != ProxyParse::Done) {
    // Not HTTP's to answer: the balancer (or whoever connected) did not speak PROXY protocol.
    countProxyHeaderError();
    abort();
    return;
  }
  if (!header.source.empty()) peer_ = std::move(header.source);
  if (tls_cfg_ != nullptr) {
    // The PROXY header is plaintext; the ClientHello follows it (maybe in this same read).
    startTls(data + used, len - used);
    return;
  }
  becomeIdle();
  if (used < len && state_ == State::Idle) process(data + used, len - used);
}

void DownstreamConnection::startTls(const char* early, size_t early_len) {
  tls_ = std::make_unique<TlsTransport>(ctx_.loop(), tcp_, tls_snap_->listener_tls[listener_]);
  tls_->setCallbacks(this);
  tls_->setHandshakeCallbacks(this);
  transport_ = tls_.get();
  state_ = State::TlsHandshake;
  deadline_ms = ctx_.nowMs() + tls_cfg_->handshake_timeout.count();
  ctx_.moveConnection(this, ConnectionContext::List::Header);
  transport_->readStart();
  // Inside the TCP read callback here, so the TLS transport may call back at once.
  if (early_len > 0) tls_->receive(early, early_len);
}

const std::string& DownstreamConnection::clientCertSubject() const {
  static const std::string kNone;
  return tls_ ? tls_->peerSubject() : kNone;
}

void DownstreamConnection::onTlsHandshakeDone() {
  const Snapshot& snap = *tls_snap_;
  if (snap.tls_metrics) snap.tls_metrics->listeners[listener_].handshake(tls_->version());
  becomeIdle();
}

void DownstreamConnection::onTlsHandshakeFailed(TlsFailure reason, const std::string& detail) {
  const Snapshot& snap = *tls_snap_;
  if (snap.tls_metrics) snap.tls_metrics->listeners[listener_].failure(reason);
  log::debug("tls_handshake_failed", {{"listener", snap.config->listeners[listener_].name},
                                      {"client", peer_},
                                      {"reason", tlsFailureName(reason)},
                                      {"detail", detail}});
}

void DownstreamConnection::becomeIdle() {
  state_ = State::Idle;
  if (decoder_ != nullptr && !decoder_->inMessage()) {
    ctx_.releaseDecoder(decoder_);
    decoder_ = nullptr;
  }
  const config::Config& cfg = *ctx_.snapshot()->config;
  deadline_ms = ctx_.nowMs() + cfg.timeouts.downstream_idle.count();
  if (!served_ && ctx_.listenersClosed()) {
    // Its PROXY header arrived after the listeners closed: the grace the others got.
    deadline_ms = std::min(deadline_ms, ctx_.nowMs() + ConnectionContext::kFreshGraceMs);
  }
  ctx_.moveConnection(this, ConnectionContext::List::Idle);
  if (!read_paused_) transport_->readStart();
  // Draining: no keep-alive, but a connection that has not sent its first request yet (accepted
  // while the listeners still accept) is served once.
  if (ctx_.draining() && served_) closeConnection();
}

// ---- input ----------------------------------------------------------------------------------

void DownstreamConnection::onTransportData(const char* data, size_t len) {
  switch (state_) {
    case State::ProxyHeader:
      onProxyHeaderData(data, len);
      return;
    case State::Closing:
    case State::TlsHandshake:
      return;  // lingering: discard
    case State::Tunnel:
      if (stream_ != nullptr) stream_->tunnelData(data, len);
      return;
    default:
      break;
  }
  if (stream_ != nullptr && decoder_ != nullptr && !decoder_->inMessage()) {
    // The current request is fully read; these bytes belong to the next one.
    if (!pending_) pending_ = std::make_unique<std::string>();
    pending_->append(data, len);
    if (pending_->size() > kMaxPending) pauseReading();
    return;
  }
  process(data, len);
}

void DownstreamConnection::process(const char* data, size_t len) {
  in_process_ = true;
  while (len > 0 && state_ != State::Closing && state_ != State::Tunnel) {
    if (stream_ != nullptr && decoder_ != nullptr && !decoder_->inMessage()) {
      // Pipelined: keep the rest until the current exchange ends.
      if (!pending_) pending_ = std::make_unique<std::string>();
      pending_->append(data, len);
      if (pending_->size() > kMaxPending) pauseReading();
      break;
    }
    if (decoder_ == nullptr) {
      decoder_ = ctx_.acquireDecoder(*this, ctx_.snapshot()->config->limits);
    }
    if (state_ == State::Idle) {
      state_ = State::ReadingHead;
      deadline_ms = ctx_.nowMs() + ctx_.snapshot()->config->timeouts.header_read.count();
      ctx_.moveConnection(this, ConnectionContext::List::Header);
    }
    size_t used = 0;
    DecodeStatus st = decoder_->execute(data, len, used);
    if (st == DecodeStatus::Error) {
      const DecodeError& e = decoder_->error();
      if (stream_ != nullptr) {
        // Broken framing in the middle of a body: the stream answers (or cuts its response).
        stream_->onRequestError(e.status);
        if (state_ != State::Closing) closeConnection();
      } else {
        rejectAndClose(e.status, rejectReason(e.status), e.reason);
      }
      break;
    }
    data += used;
    len -= used;
    if (st == DecodeStatus::Upgrade) {
      // Everything after an upgrade request's head is held for the tunnel (or dropped if the
      // backend declines, in which case the connection closes).
      if (len > 0) {
        if (!pending_) pending_ = std::make_unique<std::string>();
        pending_->append(data, len);
      }
      pauseReading();
      break;
    }
    if (st == DecodeStatus::MessageComplete && stream_ == nullptr && state_ != State::Closing) {
      // The exchange finished synchronously (a local reply): parse the next request.
      if (state_ == State::Active) state_ = State::Idle;
      if (len == 0) becomeIdle();
      continue;
    }
  }
  in_process_ = false;
  if (stream_ == nullptr && state_ == State::Idle && decoder_ != nullptr &&
      !decoder_->inMessage()) {
    becomeIdle();
  }
}

void DownstreamConnection::onRequestHead(RequestHead& head) {
  served_ = true;
  state_ = State::Active;
  ctx_.moveConnection(this, ConnectionContext::List::Active);
  stream_ = ctx_.acquireStream();
  stream_->start(this, head);
}

void DownstreamConnection::onRequestBody(const char* data, size_t len) {
  if (stream_ != nullptr) stream_->onRequestBody(data, len);
}

void DownstreamConnection::onRequestComplete() {
  if (stream_ != nullptr) stream_->onRequestComplete();
}

void DownstreamConnection::onStreamDone(bool reusable) {
  Stream* s = stream_;
  stream_ = nullptr;
  ctx_.releaseStream(s);
  if (state_ == State::Closing) return;
  if (!reusable || peer_eof_) {
    closeConnection();
    return;
  }
  state_ = State::Idle;
  if (in_process_) return;  // the parse loop goes on with the bytes it holds
  processPending();
}

void DownstreamConnection::processPending() {
  if (pending_ && !pending_->empty()) {
    std::unique_ptr<std::string> buf = std::move(pending_);
    if (read_paused_) resumeReading();
    process(buf->data(), buf->size());
    if (stream_ == nullptr && state_ == State::Idle) becomeIdle();
    return;
  }
  if (read_paused_) resumeReading();
  if (state_ == State::Idle) becomeIdle();
}

void DownstreamConnection::pauseReading() {
  read_paused_ = true;
  transport_->readStop();
}

void DownstreamConnection::resumeReading() {
  read_paused_ = false;
  if (state_ != State::Closing) transport_->readStart();
}

// ---- transport events -----------------------------------------------------------------------

void DownstreamConnection::onTransportEof() {
  peer_eof_ = true;
  // Closed in the middle of a PROXY header is an error; closed before any byte is a balancer's
  // TCP health check.
  if (state_ == State::ProxyHeader && pending_) countProxyHeaderError();
  if (state_ == State::Closing) {
    transport_->close();
    return;
  }
  if (state_ == State::Tunnel) {
    if (stream_ != nullptr) stream_->tunnelClientClosed();
    return;
  }
  if (stream_ != nullptr) {
    if (decoder_ != nullptr && decoder_->inMessage()) {
      // The request was cut short.
      stream_->onDownstreamGone();
      return;
    }
    // Request complete, client half-closed: finish the response, then close.
    return;
  }
  closeConnection();
}

void DownstreamConnection::onTransportError(int) {
  state_ = State::Closing;
  if (stream_ != nullptr) stream_->onDownstreamGone();
}

void DownstreamConnection::onTransportDrained() {
  if (state_ == State::Closing && close_after_write_) {
    close_after_write_ = false;
    closeConnection();
    return;
  }
  if (stream_ != nullptr) stream_->onDownstreamDrained();
}

void DownstreamConnection::onTransportClosed() {
  state_ = State::Closing;
  if (stream_ != nullptr) stream_->onDownstreamGone();
  ctx_.connectionClosed(this);  // frees us: nothing after this line
}

// ---- tunnel ---------------------------------------------------------------------------------

void DownstreamConnection::startTunnel(UpstreamConnection* up) {
  state_ = State::Tunnel;
  tunnel_ = up;
  if (pending_ && !pending_->empty() && stream_ != nullptr) {
    std::unique_ptr<std::string> buf = std::move(pending_);
    stream_->tunnelData(buf->data(), buf->size());
  }
  resumeReading();
}

bool DownstreamConnection::closeTunnelIfOffStable() {
  return state_ == State::Tunnel && stream_ != nullptr && stream_->closeTunnelIfOffStable();
}

// ---- closing --------------------------------------------------------------------------------

void DownstreamConnection::rejectAndClose(int status, Reason reason, std::string_view detail) {
  std::string& out = ctx_.scratch();
  out.clear();
  writeLocalReplyStart(out, status, reasonName(reason), {});
  writeLocalReplyEnd(out, status, reasonName(reason), {}, true, false);
  transport_->write(out);

  // Counted and logged like every local reply: operators see attacks and client errors.
  StreamInfo info;
  info.status = static_cast<uint16_t>(status);
  info.reason = reason;
  const Snapshot& snap = *ctx_.snapshot();
  if (snap.metrics) snap.metrics->recordRequest(info);
  if (snap.stats) snap.stats->record(info);
  AccessLog* log = ctx_.accessLog();
  if (log != nullptr && log->wants(info.status, reason)) {
    AccessRecord rec;
    rec.client = peer_;
    if (decoder_ != nullptr) {
      rec.method = decoder_->head().method;
      rec.path = decoder_->head().target;
    }
    rec.status = info.status;
    rec.reason = reason;
    rec.detail = detail;
    log->appendUnfiltered(rec);
  }
  closeConnection();
}

void DownstreamConnection::closeConnection() {
  if (transport_->isClosing()) return;
  state_ = State::Closing;
  if (!transport_->initialized()) {
    ctx_.connectionClosed(this);  // never opened: no close callback will come
    return;
  }
  if (transport_->pendingBytes() > 0) {
    close_after_write_ = true;  // onTransportDrained comes back here
    return;
  }
  if (peer_eof_ || lingering_) {
    transport_->close();
    return;
  }
  // Lingering close: FIN now, keep reading (and discarding) briefly, close on EOF or deadline.
  lingering_ = true;
  transport_->shutdownWrite();
  transport_->readStart();
  deadline_ms = ctx_.nowMs() + kLingerMs;
  ctx_.moveConnection(this, ConnectionContext::List::Idle);
}

void DownstreamConnection::countProxyHeaderError() {
  const Snapshot& snap = *ctx_.snapshot();
  if (snap.metrics) snap.metrics->proxy_protocol_errors->Increment();
}

void DownstreamConnection::onDeadline() {
  if (state_ == State::ProxyHeader) countProxyHeaderError();  // no valid header in time
  if (state_ == State::TlsHandshake) {
    onTlsHandshakeFailed(TlsFailure::Timeout, "handshake_timeout");
    abort();
    return;
  }
  if (state_ == State::ReadingHead && stream_ == nullptr) {
    rejectAndClose(408, Reason::HeaderTimeout, "header_timeout");
    return;
  }
  abort();
}

void DownstreamConnection::onDrainDeadline() {
  // Closing first: the stream's end must not start a graceful close, the abort below is the close.
  state_ = State::Closing;
  if (stream_ != nullptr) stream_->onDrainDeadline();
  abort();
}

void DownstreamConnection::abort() {
  state_ = State::Closing;
  if (!transport_->initialized()) {
    ctx_.connectionClosed(this);  // never opened: no close callback will come
    return;
  }
  transport_->close();
}

void DownstreamConnection::drain() {
  if (state_ == State::Idle && served_) closeConnection();
}

void DownstreamConnection::closeTunnel() {
  if (state_ != State::Tunnel || stream_ == nullptr) {
    abort();
    return;
  }
  // The stream closes the backend side and completes; onStreamDone then closes ours gracefully.
  stream_->closeTunnel(Reason::Draining);
}

}  // namespace cutover
