// One request/response exchange on a client connection: runs the filter chain, routes (backend
// choice, admission, failover), and sends the response back. Each attempt on a backend is an
// UpstreamRequest (connect or pooled connection, request out, response relayed back through
// UpstreamRequestCallbacks); retries are decided and timed by a RetryState; the slots the request
// holds on backends live in a BackendLease.
//
// Phases:
//   Filters ──Continue…──▶ Routing ──▶ Connecting ──▶ Sending ──head──▶ Responding ──▶ Done
//      │ Responded / local reply                 │ failure (retry?) ──backoff──▶ Routing
//      └──────────────────────────────▶ LocalReply ─────────────────────────────▶ Done
// Done runs every created filter's onComplete exactly once, logs, then hands the connection back
// with DownstreamConnection::onStreamDone(), which is always the last thing a stream does.
//
// Streams are pooled per worker; the deadline timer and the RetryState's backoff timer are
// initialised once and closed only when the worker shuts down.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters/circuit_breaker.h"
#include "filters/filter.h"
#include "proxy/backend_lease.h"
#include "proxy/retry_state.h"
#include "proxy/snapshot.h"
#include "proxy/upstream_request.h"

namespace cutover {

class DownstreamConnection;
class Worker;

class Stream final : public FilterCallbacks, public UpstreamRequestCallbacks {
 public:
  explicit Stream(Worker& w);
  ~Stream() override;
  // Worker shutdown: close the timer; `done` frees the stream in the close callback.
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
  // Tunnel: client bytes to the backend.
  void tunnelData(const char* data, size_t len);
  void tunnelClientClosed();

  // ---- FilterCallbacks ----
  RequestHead& request() override { return *req_; }
  const config::Route& route() const override;
  std::string_view clientAddress() const override;
  StreamInfo& info() override { return info_; }
  uv_loop_t* loop() override;
  void localReply(int status, Reason reason, std::string_view extra_headers = {},
                  std::string_view body = {}) override;
  void addResponseHeader(std::string_view name, std::string_view value) override;
  void resume() override;

 private:
  enum class Phase : uint8_t { Filters, Routing, Connecting, Sending, Responding, Tunnel, Done };

  using Failure = UpstreamCallbacks::Failure;
  // UpstreamRequestCallbacks
  std::string& onAttemptSending() override;
  bool requestComplete() const override { return request_complete_; }
  void onAttemptHead(ResponseHead& head) override;
  void onAttemptBody(const char* data, size_t len) override;
  void onAttemptComplete() override;
  void onAttemptReadDone() override;
  void onAttemptFailed(Failure f) override;
  void pauseRequestBody() override;
  void resumeRequestBody() override;
  void onAttemptTunnelData(const char* data, size_t len) override;
  void onAttemptTunnelClosed() override;
  // Writes the held-back response head, with `first_body` in the same system call.
  void flushHead(std::string_view first_body);

  void runFilters();
  void route();
  void startAttempt();
  void recordOutcome(Outcome o, uint16_t status);
  // Schedules another attempt if the route's policy, the retry budget and the deadline allow.
  bool retryAfterFailure(Outcome o, uint16_t status, std::optional<config::Duration> retry_after);
  void failUpstream(Failure f);
  void writeResponseHead(ResponseHead& head);
  void writeLocalReply(int status, Reason reason, std::string_view extra, std::string_view body);
  void maybeFinish();
  void writeAccessLog();
  void endTunnel();
  void finish();
  void reset();
  void armRequestTimer();
  static void onTimer(uv_timer_t* t);  // the request deadline
  static void onRetryFire(void* self);  // a retry's backoff is over
  static void onTimerClosed(uv_handle_t* h);

  Worker& worker_;
  uv_timer_t timer_{};
  DownstreamConnection* conn_ = nullptr;
  RequestHead* req_ = nullptr;
  std::shared_ptr<const Snapshot> snap_;
  const config::Route* route_ = nullptr;
  StreamInfo info_;
  std::vector<std::unique_ptr<Filter>> filters_;
  size_t next_filter_ = 0;
  std::string response_headers_;  // preformatted extra response headers from filters
  std::vector<std::pair<uint32_t, uint32_t>> added_names_;  // their names within it
  bool addedByFilter(std::string_view name) const;
  std::string head_buf_;           // response head waiting for its first body bytes
  bool head_pending_ = false;
  std::string body_buf_;          // request body held until the upstream is ready
  UpstreamRequest upstream_;      // the current attempt
  Phase phase_ = Phase::Filters;
  int64_t deadline_ms_ = 0;
  uint32_t backend_ = 0;
  uint32_t split_backend_ = 0;
  bool in_filter_ = false;
  bool resume_pending_ = false;
  bool request_complete_ = false;   // client finished sending the request
  bool response_started_ = false;   // head sent to the client
  bool response_complete_ = false;
  bool response_chunked_ = false;   // we chunk-encode toward the client
  bool response_close_ = false;     // connection must close after this response
  bool head_only_ = false;
  bool client_paused_ = false;
  bool upgrade_ = false;
  RetryState retry_;               // retry policy and its backoff timer
  uint8_t handles_open_ = 0;       // while closing: timer_ and retry_'s timer
  BackendLease lease_;             // slots held on backends; released when it is reset
};

}  // namespace cutover
