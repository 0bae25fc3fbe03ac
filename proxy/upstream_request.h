// One attempt of a request on one backend: endpoint choice (round-robin over healthy endpoints),
// pool checkout or connect, the request head (through the HTTP/1 writer) and body out with their
// flow control, and the response relayed up through UpstreamRequestCallbacks, the narrow
// interface its owner implements (the model is Envoy's RouterFilterInterface). Everything that is
// per attempt lives here; the request-level decisions (which backend, retries, what the client
// gets) stay with the owner.
//
//   start() ──idle conn──▶ Sending ──head──▶ Receiving ──complete──▶ done (connection pooled)
//      │ connect                ▲                │ failure
//      └──▶ Connecting ─────────┘                ▼
//                                 onAttemptFailed (connection closed), or the tunnel after a 101
//
// A pooled connection that turns out dead (reset before any byte came back, nothing of the body
// sent) is replaced once by a fresh connection inside the same attempt.
//
// It sees its worker only through an UpstreamRequestContext (below), so unit tests run it on a
// fake context whose pool hands out connections over fake transports.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "filters/filter.h"
#include "http/http1_writer.h"
#include "proxy/backend_lease.h"
#include "proxy/snapshot.h"
#include "proxy/upstream.h"

namespace cutover {

// What an attempt needs from the worker it runs on, and nothing more: the worker's pools and
// round-robin cursors (both per worker) and its scratch buffer for serialising a head or a chunk
// frame (overwritten by the next user; never held across a call). Worker implements it; unit
// tests give a fake. Called a few times per attempt and once per chunked body piece.
class UpstreamRequestContext {
 public:
  // The pool of endpoint `e` of backend `b` of `snap` (pools outlive snapshots).
  virtual UpstreamPool& pool(const Snapshot& snap, uint32_t b, uint32_t e) = 0;
  // The next endpoint of backend `b` in round-robin order, in 0..endpoint_count-1.
  virtual uint32_t nextEndpoint(uint32_t b, uint32_t endpoint_count) = 0;
  virtual std::string& scratch() = 0;

 protected:
  ~UpstreamRequestContext() = default;
};

class UpstreamRequestCallbacks {
 public:
  virtual ~UpstreamRequestCallbacks() = default;
  // The connection is ready and the head went out: returns the body bytes held so far, which go
  // out next (and are cleared). From now on body bytes go to sendBody().
  virtual std::string& onAttemptSending() = 0;
  // A dead pooled connection is being replaced by a fresh one within the attempt: body bytes
  // must be held again until onAttemptSending().
  virtual void onAttemptReconnecting() = 0;
  // Whether the client has sent its whole request (the body's end goes out with it).
  virtual bool requestComplete() const = 0;
  virtual void onAttemptHead(ResponseHead& head) = 0;
  virtual void onAttemptBody(const char* data, size_t len) = 0;
  // The response is complete; the connection went back to the pool (or was closed).
  virtual void onAttemptComplete() = 0;
  // The bytes of one read were all delivered (flush what was held for batching).
  virtual void onAttemptReadDone() = 0;
  // The attempt failed; its connection is closed. Not called for a failure start() returned.
  virtual void onAttemptFailed(UpstreamCallbacks::Failure f) = 0;
  // Request-body flow control: the backend side is above / back below the high watermark.
  virtual void pauseRequestBody() = 0;
  virtual void resumeRequestBody() = 0;
  // Tunnel mode (after a 101).
  virtual void onAttemptTunnelData(const char* data, size_t len) = 0;
  virtual void onAttemptTunnelClosed() = 0;
};

// What the router drives: one attempt at a time. UpstreamRequest is the implementation; unit
// tests of the router use a fake.
class UpstreamAttempt {
 public:
  virtual ~UpstreamAttempt() = default;
  // Starts an attempt of `req` on backend `b`. Returns Reason::None when under way (exactly one
  // of onAttemptHead/onAttemptFailed follows), else why it could not start (NoEndpoint,
  // MaxConnections, MaxPending, UpstreamConnectFailure), and then nothing is called back.
  virtual Reason start(const Snapshot& snap, uint32_t b, const RequestHead& req,
                       const ForwardInfo& fwd, BackendLease& lease) = 0;
  // Request body bytes from the client (chunk-framed when the request is chunked).
  virtual void sendBody(const char* data, size_t len) = 0;
  // The client's request ended: the terminating chunk goes out.
  virtual void endBody() = 0;
  // Response-side flow control (the client is slow / caught up).
  virtual void pauseResponse() = 0;
  virtual void resumeResponse() = 0;
  // Drops the attempt and its connection (nothing is called back).
  virtual void abandon() = 0;
  // After a 101: the connection becomes a byte tunnel; returns it for the client side.
  virtual UpstreamConnection* startTunnel() = 0;
  virtual void tunnelWrite(const char* data, size_t len) = 0;
  virtual bool active() const = 0;
  virtual bool bodyStarted() const = 0;
  virtual uint32_t endpoint() const = 0;
  // Clears the per-attempt state for the next attempt or request.
  virtual void reset() = 0;
};

class UpstreamRequest final : public UpstreamAttempt, public UpstreamCallbacks {
 public:
  UpstreamRequest(UpstreamRequestContext& ctx, UpstreamRequestCallbacks& cb) : ctx_(ctx), cb_(cb) {}
  UpstreamRequest(const UpstreamRequest&) = delete;
  UpstreamRequest& operator=(const UpstreamRequest&) = delete;

  Reason start(const Snapshot& snap, uint32_t b, const RequestHead& req, const ForwardInfo& fwd,
               BackendLease& lease) override;
  void sendBody(const char* data, size_t len) override;
  void endBody() override;
  void pauseResponse() override;
  void resumeResponse() override;
  void abandon() override;
  UpstreamConnection* startTunnel() override;
  void tunnelWrite(const char* data, size_t len) override;
  bool active() const override { return up_ != nullptr; }
  bool bodyStarted() const override { return body_started_; }
  uint32_t endpoint() const override { return endpoint_; }
  void reset() override;

 private:
  Reason connectFresh(const BackendRuntime& rt);
  void sendHead();
  void checkWatermark();

  // UpstreamCallbacks (from the connection)
  void onUpstreamConnected() override;
  void onUpstreamHead(ResponseHead& head) override;
  void onUpstreamBody(const char* data, size_t len) override;
  void onUpstreamComplete() override;
  void onUpstreamFailure(Failure f, int err) override;
  void onUpstreamDrained() override;
  void onUpstreamReadDone() override;
  void onUpstreamTunnelData(const char* data, size_t len) override;
  void onUpstreamTunnelClosed() override;

  UpstreamRequestContext& ctx_;
  UpstreamRequestCallbacks& cb_;
  UpstreamConnection* up_ = nullptr;
  // The attempt's inputs, valid until it ends (the owner keeps them alive).
  const Snapshot* snap_ = nullptr;
  const RequestHead* req_ = nullptr;
  ForwardInfo fwd_;
  BackendLease* lease_ = nullptr;
  uint32_t backend_ = 0;
  uint32_t endpoint_ = 0;
  bool head_sent_ = false;
  bool body_started_ = false;  // body bytes went out: the attempt cannot be replayed
  bool body_done_ = false;     // the whole request went out
  bool response_paused_ = false;
  bool write_paused_ = false;  // the client was asked to pause for this attempt's writes
  bool fresh_retry_used_ = false;
  bool upgrade_ = false;
};

}  // namespace cutover
