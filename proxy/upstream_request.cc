#include "proxy/upstream_request.h"

#include "policy/circuit_breaker.h"
#include "policy/health_state.h"

namespace cutover {

void UpstreamRequest::reset() {
  up_ = nullptr;
  snap_ = nullptr;
  req_ = nullptr;
  lease_ = nullptr;
  head_sent_ = body_started_ = body_done_ = false;
  response_paused_ = write_paused_ = fresh_retry_used_ = upgrade_ = false;
}

Reason UpstreamRequest::start(const Snapshot& snap, uint32_t b, const RequestHead& req,
                              const ForwardInfo& fwd, BackendLease& lease) {
  abandon();
  reset();
  const config::Backend& be = snap.config->backends[b];
  const BackendRuntime& rt = snap.backends[b];
  uint32_t n = static_cast<uint32_t>(be.endpoints.size());
  if (n == 0) return Reason::NoEndpoint;
  uint32_t e = ctx_.nextEndpoint(b, n);
  if (rt.health) {
    // Round-robin over the endpoints health checks consider up.
    uint32_t k = 0;
    while (k < n && !rt.health->healthy(e)) {
      e = (e + 1) % n;
      ++k;
    }
    if (k == n) return Reason::NoEndpoint;
  }
  snap_ = &snap;
  req_ = &req;
  fwd_ = fwd;
  fwd_.default_host = be.endpoints[e].text;
  lease_ = &lease;
  backend_ = b;
  endpoint_ = e;
  upgrade_ = req.upgrade;
  if (UpstreamConnection* idle = ctx_.pool(snap, b, e).takeIdle()) {
    up_ = idle;
    up_->attach(this);
    sendHead();
    return Reason::None;
  }
  return connectFresh(rt);
}

Reason UpstreamRequest::connectFresh(const BackendRuntime& rt) {
  if (rt.limits) {
    Reason r = rt.limits->tryAcquireConnection();
    if (r != Reason::None) return r;
    r = lease_->acquirePending(rt);
    if (r != Reason::None) {
      rt.limits->releaseConnection();
      return r;
    }
  }
  up_ = ctx_.pool(*snap_, backend_, endpoint_).create();
  up_->holdConnectionSlot(rt.limits);
  int rc = up_->connect(this, static_cast<uint32_t>(snap_->config->timeouts.connect.count()));
  if (rc != 0) {
    abandon();
    return Reason::UpstreamConnectFailure;
  }
  return Reason::None;
}

void UpstreamRequest::onUpstreamConnected() {
  lease_->releasePending();
  sendHead();
}

void UpstreamRequest::sendHead() {
  const config::Config& cfg = *snap_->config;
  up_->beginExchange(req_->method, static_cast<uint32_t>(cfg.timeouts.upstream_idle.count()));
  std::string& out = ctx_.scratch();
  out.clear();
  writeRequestHead(out, *req_, fwd_);
  up_->write(out);
  head_sent_ = true;
  std::string& held = cb_.onAttemptSending();
  if (!held.empty()) {
    sendBody(held.data(), held.size());
    held.clear();
  }
  if (up_ == nullptr) return;
  if (cb_.requestComplete()) endBody();
  if (up_ != nullptr && up_->pendingBytes() < cfg.limits.high_watermark) cb_.resumeRequestBody();
}

void UpstreamRequest::sendBody(const char* data, size_t len) {
  if (len == 0 || up_ == nullptr || !head_sent_) return;
  body_started_ = true;
  if (req_->chunked) {
    std::string& out = ctx_.scratch();
    out.clear();
    appendChunkHeader(out, len);
    out.append(data, len);
    out.append(kCrlf);
    up_->write(out);
  } else {
    up_->write(data, len);
  }
  checkWatermark();
}

void UpstreamRequest::endBody() {
  if (body_done_ || up_ == nullptr || !head_sent_) return;
  body_done_ = true;
  if (req_->chunked) up_->write(kChunkEnd);
}

void UpstreamRequest::checkWatermark() {
  if (up_ != nullptr && up_->pendingBytes() > snap_->config->limits.high_watermark) {
    cb_.pauseRequestBody();
  }
}

void UpstreamRequest::tunnelWrite(const char* data, size_t len) {
  if (up_ == nullptr) return;
  up_->write(data, len);
  checkWatermark();
}

void UpstreamRequest::pauseResponse() {
  if (response_paused_ || up_ == nullptr) return;
  response_paused_ = true;
  up_->pauseReading();
}

void UpstreamRequest::resumeResponse() {
  if (!response_paused_ || up_ == nullptr) return;
  response_paused_ = false;
  up_->resumeReading();
}

void UpstreamRequest::abandon() {
  if (lease_ != nullptr) lease_->releasePending();
  if (up_ == nullptr) return;
  UpstreamConnection* up = up_;
  up_ = nullptr;
  up->close();
}

UpstreamConnection* UpstreamRequest::startTunnel() {
  up_->startTunnel();
  return up_;
}

void UpstreamRequest::onUpstreamHead(ResponseHead& head) { cb_.onAttemptHead(head); }

void UpstreamRequest::onUpstreamBody(const char* data, size_t len) { cb_.onAttemptBody(data, len); }

void UpstreamRequest::onUpstreamComplete() {
  UpstreamConnection* up = up_;
  up_ = nullptr;
  // Reusable only if it carried a whole request and the backend keeps it alive.
  up->release(body_done_ && up->state() == UpstreamConnection::State::Active && !upgrade_);
  cb_.onAttemptComplete();
}

void UpstreamRequest::onUpstreamFailure(Failure f, int) {
  // A pooled connection the backend had already closed: once, a fresh connection to the same
  // endpoint, if nothing of the answer came back and no body byte went out.
  bool dead_pooled = up_ != nullptr && up_->reused() && !up_->receivedBytes() &&
                     f == Failure::Reset && !body_started_ && !fresh_retry_used_;
  up_ = nullptr;  // the connection closed itself
  if (lease_ != nullptr) lease_->releasePending();
  if (dead_pooled) {
    fresh_retry_used_ = true;
    head_sent_ = false;
    body_done_ = false;  // the end of the body goes out again on the fresh connection
    cb_.onAttemptReconnecting();
    Reason r = connectFresh(snap_->backends[backend_]);
    if (r == Reason::None) return;
    f = r == Reason::UpstreamConnectFailure ? Failure::Connect : f;
  }
  cb_.onAttemptFailed(f);
}

void UpstreamRequest::onUpstreamDrained() { cb_.resumeRequestBody(); }

void UpstreamRequest::onUpstreamReadDone() { cb_.onAttemptReadDone(); }

void UpstreamRequest::onUpstreamTunnelData(const char* data, size_t len) {
  cb_.onAttemptTunnelData(data, len);
}

void UpstreamRequest::onUpstreamTunnelClosed() { cb_.onAttemptTunnelClosed(); }

}  // namespace cutover
