#include "proxy/upstream.h"

#include <prometheus/counter.h>

#include <algorithm>

#include "policy/circuit_breaker.h"
#include "proxy/log.h"

namespace cutover {

UpstreamConnection::UpstreamConnection(UpstreamContext& ctx, UpstreamPool& pool,
                                       Transport* transport)
    : ctx_(ctx),
      pool_(pool),
      transport_(transport != nullptr ? transport : &tcp_),
      decoder_(*this) {
  if (transport == nullptr && pool.tls().ctx) {
    const std::string& addr = pool.address();
    // The IP to verify when no name is: the address without its port (and brackets).
    std::string ip = addr.substr(0, addr.rfind(':'));
    if (ip.size() >= 2 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
    tls_ = std::make_unique<TlsTransport>(ctx.loop(), tcp_, pool.tls().ctx, pool.tls().sni, ip);
    tls_->setHandshakeCallbacks(this);
    tls_->setSession(pool.tlsSession());
    transport_ = tls_.get();
  }
  uv_timer_init(ctx.loop(), &timer_);
  timer_.data = this;
  transport_->setCallbacks(this);
  ctx.upstreamCreated();
}

UpstreamConnection::~UpstreamConnection() = default;

int UpstreamConnection::connect(UpstreamCallbacks* owner, uint32_t connect_timeout_ms) {
  owner_ = owner;
  state_ = State::Connecting;
  int rc = transport_->connect(ctx_.loop(), pool_.addr(), ctx_.readBuffer(), ctx_.readBufferSize());
  if (rc != 0) return rc;
  armTimer(connect_timeout_ms);
  return 0;
}

void UpstreamConnection::attach(UpstreamCallbacks* owner) {
  owner_ = owner;
  reused_ = true;
  state_ = State::Active;
  uv_timer_stop(&timer_);
  timer_armed_ = false;
}

void UpstreamConnection::beginExchange(std::string_view method, uint32_t idle_timeout_ms) {
  decoder_.reset();
  decoder_.expectResponseTo(method);
  received_bytes_ = false;
  complete_ = false;
  unusable_ = false;
  idle_timeout_ms_ = idle_timeout_ms;
  exchange_start_ms_ = uv_now(ctx_.loop());
  last_read_ms_ = 0;
  read_paused_ = false;
  armTimer(idle_timeout_ms);
  transport_->readStart();
}

void UpstreamConnection::armTimer(uint64_t ms) {
  if (ms == 0) return;
  timer_armed_ = true;
  uv_timer_start(&timer_, onTimer, ms, 0);
}

void UpstreamConnection::resumeReading() {
  if (state_ == State::Closing) return;
  read_paused_ = false;
  transport_->readStart();
  // Paused reading is our doing, not the backend's silence: restart the idle clock.
  if (state_ == State::Active) last_read_ms_ = uv_now(ctx_.loop());
}

void UpstreamConnection::onTimer(uv_timer_t* t) {
  auto* self = static_cast<UpstreamConnection*>(t->data);
  self->timer_armed_ = false;
  switch (self->state_) {
    case State::Connecting:
      self->fail(UpstreamCallbacks::Failure::Connect, UV_ETIMEDOUT);
      break;
    case State::Active: {
      if (self->complete_) break;
      if (self->read_paused_) {
        self->armTimer(self->idle_timeout_ms_);
        break;
      }
      uint64_t now = uv_now(self->ctx_.loop());
      uint64_t quiet = now - std::max(self->last_read_ms_, self->exchange_start_ms_);
      if (quiet < self->idle_timeout_ms_) {
        self->armTimer(self->idle_timeout_ms_ - quiet);  // bytes came meanwhile
        break;
      }
      self->fail(UpstreamCallbacks::Failure::Timeout, UV_ETIMEDOUT);
      break;
    }
    case State::Idle:
      self->pool_.removeIdle(self);
      self->close();
      break;
    default:
      break;
  }
}

void UpstreamConnection::onTransportConnected() {
  uv_timer_stop(&timer_);
  timer_armed_ = false;
  state_ = State::Active;
  if (owner_ != nullptr) owner_->onUpstreamConnected();
}

void UpstreamConnection::onTransportData(const char* data, size_t len) {
  if (state_ == State::Tunnel) {
    if (owner_ != nullptr) owner_->onUpstreamTunnelData(data, len);
    return;
  }
  if (state_ == State::Idle) {
    // A backend must not send anything unasked: the connection is unusable.
    pool_.removeIdle(this);
    close();
    return;
  }
  if (state_ != State::Active) return;
  received_bytes_ = true;
  // The idle timer is not re-armed per read: it checks this when it fires.
  last_read_ms_ = uv_now(ctx_.loop());
  UpstreamCallbacks* owner = owner_;
  decodeResponse(data, len);
  // Still ours and still exchanging: let the owner flush what it held back during this read.
  if (owner != nullptr && owner_ == owner && state_ == State::Active) owner->onUpstreamReadDone();
}

void UpstreamConnection::decodeResponse(const char* data, size_t len) {
  while (len > 0 && state_ == State::Active) {
    size_t used = 0;
    DecodeStatus st = decoder_.execute(data, len, used);
    if (st == DecodeStatus::Error) {
      fail(UpstreamCallbacks::Failure::BadResponse, 0);
      return;
    }
    if (st == DecodeStatus::Upgrade) {
      // 101: the rest is tunnel data. The owner switched us to Tunnel in onUpstreamHead.
      data += used;
      len -= used;
      if (len > 0 && state_ == State::Tunnel && owner_ != nullptr) {
        owner_->onUpstreamTunnelData(data, len);
      }
      return;
    }
    if (st == DecodeStatus::MessageComplete) {
      // Bytes after a complete response: the backend is confused; never reuse.
      if (used < len) unusable_ = true;
      // Told only now, after llhttp returned: the owner may hand this connection to the next
      // request, which resets the decoder.
      if (owner_ != nullptr) owner_->onUpstreamComplete();
      return;
    }
    data += used;
    len -= used;
  }
}

void UpstreamConnection::onResponseHead(ResponseHead& head) {
  // The backend said it closes after this response (Connection: close, or HTTP/1.0 without
  // keep-alive): never pooled, or the next request would find it dead.
  if (!head.keep_alive) unusable_ = true;
  if (owner_ != nullptr) owner_->onUpstreamHead(head);
}

void UpstreamConnection::onResponseBody(const char* data, size_t len) {
  if (owner_ != nullptr) owner_->onUpstreamBody(data, len);
}

void UpstreamConnection::onResponseComplete() {
  // The timer is left running: release() re-arms it for the pool's idle timeout or closes it.
  complete_ = true;
}

void UpstreamConnection::onTransportEof() {
  switch (state_) {
    case State::Tunnel:
      if (owner_ != nullptr) owner_->onUpstreamTunnelClosed();
      close();
      return;
    case State::Idle:
      pool_.removeIdle(this);
      close();
      return;
    case State::Active: {
      DecodeStatus st = decoder_.finish();
      if (st == DecodeStatus::MessageComplete) {
        unusable_ = true;
        if (owner_ != nullptr) owner_->onUpstreamComplete();
        close();
        return;
      }
      fail(UpstreamCallbacks::Failure::Reset, UV_ECONNRESET);
      return;
    }
    default:
      close();
  }
}

void UpstreamConnection::onTlsHandshakeFailed(TlsFailure reason, const std::string& detail) {
  tls_verify_failed_ = tls_->verifyFailed();
  size_t r = tls_verify_failed_ ? kTlsFailureCount : static_cast<size_t>(reason);
  if (prometheus::Counter* c = pool_.tls().failures[r]) c->Increment();
  log::warn("upstream_tls_failed", {{"backend", pool_.backend()},
                                    {"address", pool_.address()},
                                    {"reason", upstreamTlsReasonName(r)},
                                    {"error", detail}});
}

void UpstreamConnection::onTlsSession(TlsSession s) { pool_.setTlsSession(std::move(s)); }

void UpstreamConnection::onTransportError(int err) {
  if (state_ == State::Idle) {
    pool_.removeIdle(this);
    close();
    return;
  }
  if (state_ == State::Tunnel) {
    if (owner_ != nullptr) owner_->onUpstreamTunnelClosed();
    close();
    return;
  }
  fail(tls_verify_failed_            ? UpstreamCallbacks::Failure::TlsVerify
       : state_ == State::Connecting ? UpstreamCallbacks::Failure::Connect
                                     : UpstreamCallbacks::Failure::Reset,
       err);
}

void UpstreamConnection::fail(UpstreamCallbacks::Failure f, int err) {
  if (state_ == State::Closing) return;
  UpstreamCallbacks* owner = owner_;
  close();
  if (owner != nullptr) owner->onUpstreamFailure(f, err);
}

void UpstreamConnection::onTransportDrained() {
  if (owner_ != nullptr && (state_ == State::Active || state_ == State::Tunnel)) {
    owner_->onUpstreamDrained();
  }
}

void UpstreamConnection::release(bool reusable) {
  owner_ = nullptr;
  if (state_ == State::Closing) return;
  if (!reusable || !complete_ || unusable_ || transport_->pendingBytes() > 0 ||
      ctx_.poolsClosing()) {
    close();
    return;
  }
  state_ = State::Idle;
  pool_.putIdle(this);  // may close us when the pool is full
}

void UpstreamConnection::beginIdle(uint64_t idle_timeout_ms) {
  armTimer(idle_timeout_ms);
  transport_->readStart();
}

void UpstreamConnection::startTunnel() {
  state_ = State::Tunnel;
  uv_timer_stop(&timer_);
  timer_armed_ = false;
}

void UpstreamConnection::close() {
  if (state_ == State::Closing) return;
  state_ = State::Closing;
  owner_ = nullptr;
  if (conn_limits_) {
    conn_limits_->releaseConnection();
    conn_limits_.reset();
  }
  transport_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onTimerClosed);
  if (!transport_->initialized()) transport_closed_ = true;
}

void UpstreamConnection::onTimerClosed(uv_handle_t* h) {
  auto* self = static_cast<UpstreamConnection*>(h->data);
  self->timer_closed_ = true;
  if (self->transport_closed_) self->ctx_.upstreamClosed(self);
}

void UpstreamConnection::onTransportClosed() {
  transport_closed_ = true;
  if (timer_closed_) ctx_.upstreamClosed(this);
}

// ---------------------------------------------------------------------------------------------

UpstreamPool::UpstreamPool(UpstreamContext& ctx, std::string backend, std::string address,
                           const sockaddr_storage& addr)
    : ctx_(ctx), backend_(std::move(backend)), address_(std::move(address)), addr_(addr) {}

UpstreamPool::~UpstreamPool() = default;

void UpstreamPool::configureTls(UpstreamTls tls) {
  bool switched = (tls.ctx == nullptr) != (tls_.ctx == nullptr) || tls.sni != tls_.sni;
  if (tls.ctx != tls_.ctx) session_.reset();
  tls_ = std::move(tls);
  if (switched) closeIdle();
}

UpstreamConnection* UpstreamPool::takeIdle() {
  // Most recently used first: it is the least likely to have been closed by the backend.
  return idle_.popBack();
}

UpstreamConnection* UpstreamPool::create() {
  ++opened_;
  return new UpstreamConnection(ctx_, *this, ctx_.upstreamTransport(*this));
}

void UpstreamPool::putIdle(UpstreamConnection* c) {
  if (idle_.size() >= max_idle_) {
    c->close();
    return;
  }
  idle_.pushBack(c);
  c->beginIdle(idle_timeout_ms_);
}

void UpstreamPool::removeIdle(UpstreamConnection* c) { idle_.remove(c); }

void UpstreamPool::closeIdle() {
  while (UpstreamConnection* c = idle_.popFront()) c->close();
}

}  // namespace cutover
