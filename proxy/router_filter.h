// The router, the terminal step of every request's filter chain: which backend takes the request
// (override header, sticky bucket, weighted split), whether it may (endpoints, health, breaker,
// the backend's rate limit and in-flight limit), failover to the route's fallback, the attempts
// (each an UpstreamRequest) and retries (RetryState), with every slot held on a backend in one
// BackendLease. It hears each attempt through UpstreamRequestCallbacks, decides what a failure or
// a retryable answer means, and hands the response that stands to its stream through
// RouterCallbacks. The stream knows nothing of backends, pools or retries.
//
//   start ──admit──▶ Connecting ──▶ Sending ──head──▶ Responding ─▶ (stream)
//     │ refused          ▲  │ failure / retryable answer
//     ▼                  │  ▼
//   local reply        Backoff (RetryState timer) ──▶ Connecting, or local reply
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "filters/filter.h"
#include "proxy/backend_lease.h"
#include "proxy/metrics.h"
#include "proxy/retry_state.h"
#include "proxy/snapshot.h"
#include "proxy/upstream_request.h"

namespace cutover {

class FastRng;

// What the router needs from its stream.
class RouterCallbacks {
 public:
  virtual ~RouterCallbacks() = default;
  // The proxy answers the request itself (refused, no backend, failed attempts).
  virtual void routerLocalReply(int status, Reason reason, std::string_view extra) = 0;
  // The response that stands: its head (a 101 included), body bytes, end, and the end of one
  // read of them (a chance to flush what was held for batching).
  virtual void routerHead(ResponseHead& head) = 0;
  virtual void routerBody(const char* data, size_t len) = 0;
  virtual void routerComplete() = 0;
  virtual void routerReadDone() = 0;
  // The backend failed after the response had started: the client's response is cut.
  virtual void routerResponseCut(Reason reason) = 0;
  virtual bool responseStarted() const = 0;
  virtual bool requestComplete() const = 0;
  // Request-body flow control toward the client.
  virtual void pauseClient() = 0;
  virtual void resumeClient() = 0;
  // Bytes straight to the client: "100 Continue", and tunnel data after a 101.
  virtual void writeToClient(std::string_view bytes) = 0;
  virtual void routerTunnelClosed() = 0;
  // A header for the response the client gets, whichever it is, added beside the backend's (a
  // backend header of the same name stays): the sticky cookie.
  virtual void appendResponseHeader(std::string_view name, std::string_view value) = 0;
};

class Router final : public UpstreamRequestCallbacks {
 public:
  // `loop` runs the retry timer; `rng` picks buckets for requests without a sticky key.
  Router(uv_loop_t* loop, FastRng& rng, RouterCallbacks& cb);
  // The attempt object the router drives (set once, before the first request).
  void setAttempt(UpstreamAttempt& attempt) { upstream_ = &attempt; }
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;
  // Worker shutdown: closes the retry timer; `closed` runs for it with handle->data = `data`.
  void close(uv_close_cb closed, void* data) { retry_.close(closed, data); }
  // Before the filter chain runs: the snapshot the request holds (for body buffering limits).
  void bind(const Snapshot& snap) { snap_ = &snap; }

  // Routes `req` on `route` (nullptr: no route, 404) under the bound snapshot. `info` is the
  // stream's, filled as it goes. `client_address` is the real client (sticky client_ip); `fwd`
  // what every attempt adds to the forwarded head (the TCP peer for X-Forwarded-For, the proto).
  void start(const config::Route* route, RequestHead& req, StreamInfo& info,
             std::string_view client_address, const ForwardInfo& fwd, int64_t deadline_ms);
  void onRequestBody(const char* data, size_t len);
  void onRequestComplete();
  // The client caught up with the response (resume reading the backend) / fell behind.
  void resumeResponse() { upstream_->resumeResponse(); }
  void pauseResponse() { upstream_->pauseResponse(); }
  // The stream answered or ended: drop the attempt and any pending retry. An attempt still
  // under way is counted with `why` (Cancelled, or Timeout when the request's deadline passed).
  void abandon(AttemptOutcome why = AttemptOutcome::Cancelled);
  // After routerHead() of a 101: the backend connection becomes a tunnel; client bytes go to it.
  UpstreamConnection* startTunnel() { return upstream_->startTunnel(); }
  void tunnelWrite(const char* data, size_t len) { upstream_->tunnelWrite(data, len); }
  bool tunnelOpen() const { return upstream_->active(); }
  // The backend that served (or was last tried).
  uint32_t backend() const { return backend_; }
  // The request ended: gives back every slot it held, and clears for the next request.
  void reset();

  // ---- UpstreamRequestCallbacks: what the current attempt reports ----
  using Failure = UpstreamCallbacks::Failure;
  std::string& onAttemptSending() override;
  void onAttemptReconnecting() override { state_ = State::Connecting; }
  bool requestComplete() const override { return cb_.requestComplete(); }
  void onAttemptHead(ResponseHead& head) override;
  void onAttemptBody(const char* data, size_t len) override { cb_.routerBody(data, len); }
  void onAttemptComplete() override;
  void onAttemptReadDone() override { cb_.routerReadDone(); }
  void onAttemptFailed(Failure f) override { failUpstream(f); }
  void pauseRequestBody() override { cb_.pauseClient(); }
  void resumeRequestBody() override { cb_.resumeClient(); }
  void onAttemptTunnelData(const char* data, size_t len) override;
  void onAttemptTunnelClosed() override { cb_.routerTunnelClosed(); }

 private:
  enum class State : uint8_t { Idle, Connecting, Sending, Backoff, Responding, Done };

  // Backend `b` passed admission but the request goes elsewhere (or nowhere): its half-open probe,
  // if it took one, is given back.
  void unadmit(const Snapshot& snap, uint32_t b);
  // Takes a token from backend `b`'s own rate limit: true when allowed (or only counted, in
  // dry-run mode), false with the Retry-After seconds when over it.
  bool takeBackendLimit(const Snapshot& snap, uint32_t b, int64_t now, StreamInfo& info,
                        uint32_t& retry_after_s);
  void startAttempt();
  void recordOutcome(Outcome o, uint16_t status);
  // The current attempt ended with `o`: counted once in cutover_upstream_attempts_total and
  // /stats (a no-op when no attempt is open).
  void endAttempt(AttemptOutcome o);
  bool retryAfterFailure(Outcome o, uint16_t status, std::optional<config::Duration> retry_after);
  void failUpstream(Failure f);
  void localReply(int status, Reason reason, std::string_view extra = {});
  static void onRetryFire(void* self);

  uv_loop_t* loop_;
  FastRng& rng_;
  RouterCallbacks& cb_;
  UpstreamAttempt* upstream_ = nullptr;  // the current attempt
  RetryState retry_;
  BackendLease lease_;
  // The request's inputs, valid until reset() (the stream keeps them alive).
  const Snapshot* snap_ = nullptr;
  const config::Route* route_ = nullptr;
  RequestHead* req_ = nullptr;
  StreamInfo* info_ = nullptr;
  std::string_view client_address_;
  ForwardInfo fwd_;
  int64_t deadline_ms_ = 0;
  std::string body_buf_;  // request body held until an attempt is sending
  uint32_t backend_ = 0;
  uint16_t attempt_status_ = 0;  // status of the current attempt's response head, 0 before it
  bool attempt_open_ = false;    // an attempt started and its outcome is not counted yet
  State state_ = State::Idle;
};

}  // namespace cutover
