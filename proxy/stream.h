// One request/response exchange on a client connection. The stream runs the filter chain, makes
// local replies (every one with a Reason), writes the response toward the client with its flow
// control, and completes the exchange (filters' onComplete, metrics, /stats, access log). Which
// backend takes the request, admission, failover, attempts and retries are the Router's (the
// terminal step of the chain, proxy/router_filter.h), which hands the response that stands back
// through RouterCallbacks; the stream reads what happened upstream from StreamInfo only. The
// Router and the UpstreamRequest it drives are members, built once per pooled stream, so a request
// costs no allocation for them.
//
// Phases:
//   Filters ──Continue…──▶ Routing (the router's) ──head──▶ Responding ──▶ Done
//      │ Responded / local reply          │ local reply (refused, failed attempts)
//      └──────────────────────────────────┴──▶ LocalReply ──────────────────▶ Done
// Done runs every created filter's onComplete exactly once, logs, then hands the connection back
// with DownstreamConnection::onStreamDone(), which is always the last thing a stream does.
//
// Streams are pooled per worker; the deadline timer and the RetryState's backoff timer are
// initialised once and closed only when the worker shuts down. A stream sees its worker only
// through a StreamContext (below).
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/filter.h"
#include "proxy/router_filter.h"
#include "proxy/snapshot.h"

namespace cutover {

class AccessLog;
class DownstreamConnection;
class FastRng;

// What a stream needs from the worker it runs on, and nothing more: the loop (its timers), the
// clock, the running snapshot (taken when a request starts and held to its end), whether the
// worker is draining (responses then say Connection: close), a scratch buffer for serialising
// (overwritten by the next user), the worker's access log, the rng for unsticky split buckets, and
// the context its upstream attempts run in. Worker implements it. Called per request or per
// event, never per byte.
class StreamContext {
 public:
  virtual uv_loop_t* loop() = 0;
  virtual int64_t nowMs() const = 0;
  virtual const std::shared_ptr<const Snapshot>& snapshot() const = 0;
  virtual bool draining() const = 0;
  virtual std::string& scratch() = 0;
  // Null when the worker's loop is not running.
  virtual AccessLog* accessLog() = 0;
  virtual FastRng& rng() = 0;
  virtual UpstreamRequestContext& upstreamContext() = 0;

 protected:
  ~StreamContext() = default;
};

class Stream final : public FilterCallbacks, public RouterCallbacks {
 public:
  explicit Stream(StreamContext& ctx);
  ~Stream() override;
  // Worker shutdown: closes the timers; the stream is freed in the last close callback.
  void closeHandles();

  // ---- from the DownstreamConnection ----
  void start(DownstreamConnection* conn, RequestHead& head);
  void onRequestBody(const char* data, size_t len);
  void onRequestComplete();
  void onDownstreamDrained();
  // The request body turned out malformed (bad chunk): answer `status` if nothing was sent yet,
  // else cut the response; either way the connection closes.
  void onRequestError(int status);
  // Client went away (reset or EOF mid-request): abort everything, complete, report done.
  void onDownstreamGone();
  // The worker's drain deadline passed: like onDownstreamGone, but the client did not leave, the
  // proxy cut it: logged and counted with reason `draining`. The connection closes right after.
  void onDrainDeadline();
  // Tunnel: client bytes to the backend.
  void tunnelData(const char* data, size_t len);
  void tunnelClientClosed();
  // A rollback asked to close tunnels: ends this one (backend side, then the client's) when it
  // runs to a backend that is not its route's stable one. True when it did.
  bool closeTunnelIfOffStable();
  // The proxy ends the tunnel (drain): both sides are closed, the exchange is logged with `why`.
  void closeTunnel(Reason why);

  // ---- FilterCallbacks ----
  RequestHead& request() override { return *req_; }
  const config::Route& route() const override;
  std::string_view clientAddress() const override;
  std::string_view clientCertSubject() const override;
  StreamInfo& info() override { return info_; }
  uv_loop_t* loop() override;
  void localReply(int status, Reason reason, std::string_view extra_headers = {},
                  std::string_view body = {}) override;
  void addResponseHeader(std::string_view name, std::string_view value) override;
  void appendResponseHeader(std::string_view name, std::string_view value) override;
  void resume() override;

 private:
  enum class Phase : uint8_t { Filters, Routing, Responding, Tunnel, Done };

  // ---- RouterCallbacks ----
  void routerLocalReply(int status, Reason reason, std::string_view extra) override {
    localReply(status, reason, extra);
  }
  void routerHead(ResponseHead& head) override;
  void routerBody(const char* data, size_t len) override;
  void routerComplete() override;
  void routerReadDone() override { flushHead({}); }
  void routerResponseCut(Reason reason) override;
  bool responseStarted() const override { return response_started_; }
  bool requestComplete() const override { return request_complete_; }
  void pauseClient() override;
  void resumeClient() override;
  void writeToClient(std::string_view bytes) override;
  void routerTunnelClosed() override { endTunnel(); }

  void runFilters();
  // Writes the held-back response head, with `first_body` in the same system call.
  void flushHead(std::string_view first_body);
  void writeResponseHead(ResponseHead& head);
  void writeLocalReply(int status, Reason reason, std::string_view extra, std::string_view body);
  void appendProxyHeaders(std::string& out) const;  // x-cutover-backend, x-cutover-attempts
  void maybeFinish();
  void writeAccessLog();
  void endTunnel();
  void finish();
  void reset();
  void armRequestTimer();
  static void onTimer(uv_timer_t* t);  // the request deadline
  static void onTimerClosed(uv_handle_t* h);
  bool addedByFilter(std::string_view name) const;

  StreamContext& ctx_;
  uv_timer_t timer_{};
  DownstreamConnection* conn_ = nullptr;
  RequestHead* req_ = nullptr;
  std::shared_ptr<const Snapshot> snap_;
  const config::Route* route_ = nullptr;
  StreamInfo info_;
  std::string_view client_address_;  // real client (common/client_address.h): peer or client_buf_
  char client_buf_[64];              // an address taken from X-Forwarded-For
  std::string_view forwarded_proto_ = "http";
  std::vector<Filter*> filters_;  // built in filter_mem_; destroyed by destroyFilters()
  std::unique_ptr<std::max_align_t[]> filter_mem_;  // reused across requests, grown when needed
  size_t filter_mem_slots_ = 0;
  void createFilters();
  void destroyFilters();
  size_t next_filter_ = 0;
  std::string response_headers_;  // preformatted extra response headers from filters
  std::vector<std::pair<uint32_t, uint32_t>> added_names_;  // their names within it
  std::string head_buf_;      // response head waiting for its first body bytes
  Router router_;             // backend choice, attempts and retries
  UpstreamRequest upstream_;  // the router's attempts
  Phase phase_ = Phase::Filters;
  int64_t deadline_ms_ = 0;
  uint8_t handles_open_ = 0;  // while closing: timer_ and the router's retry timer
  bool head_pending_ = false;
  bool in_filter_ = false;
  bool request_complete_ = false;  // client finished sending the request
  bool response_started_ = false;  // head sent to the client
  bool response_complete_ = false;
  bool response_chunked_ = false;  // we chunk-encode toward the client
  bool response_close_ = false;    // connection must close after this response
  bool head_only_ = false;
  bool client_paused_ = false;
  bool upgrade_ = false;
};

}  // namespace cutover
