// One event-loop thread. Each worker owns its uv_loop, its own listening sockets (SO_REUSEPORT on
// the same ports), its client connections, its upstream pools and a shared read buffer; it shares
// nothing with other workers on the hot path. The main thread talks to it only through
// post() (a uv_async wake-up): new snapshots, new/removed listeners, drain, stop.
//
// The objects it runs see it only through narrow contexts it implements, each defined beside its
// user: ConnectionContext (client connections), StreamContext (streams), UpstreamRequestContext
// (attempts: pools and endpoint cursors) and UpstreamContext (backend connections and pools).
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/intrusive_list.h"
#include "proxy/downstream_connection.h"
#include "proxy/router.h"
#include "proxy/snapshot.h"
#include "proxy/stream.h"
#include "proxy/upstream.h"
#include "proxy/upstream_request.h"

namespace cutover {

class AccessLogSink;

class Worker final : public ConnectionContext,
                     public StreamContext,
                     public UpstreamRequestContext,
                     public UpstreamContext {
 public:
  Worker(uint32_t id, std::shared_ptr<const Snapshot> snapshot,
         std::shared_ptr<AccessLogSink> access_sink);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // ---- called from the main thread ----
  void start();
  void join();
  // Runs `fn` on this worker's loop thread, soon.
  void post(std::function<void(Worker&)> fn);
  void setSnapshot(std::shared_ptr<const Snapshot> s);
  // Adopt an already-bound listening socket (SO_REUSEPORT).
  void addListener(const std::string& name, int fd);
  void removeListener(const std::string& name);
  // Drain, phase 1 (timeouts.drain_delay): keep accepting; every answer says Connection: close
  // and its connection closes after it; idle keep-alive connections that have served a request
  // close now, politely (FIN, between requests). Logs `drain_worker` with counts.
  void drain();
  // Drain, phase 2: close the listeners; in-flight exchanges finish with Connection: close; a
  // connection that has not sent a byte yet gets kFreshGraceMs to do so; once nothing else is in
  // flight, WebSocket/upgrade tunnels are closed on both sides (FIN, counted and logged); the loop
  // exits when nothing is left. Implies drain().
  void stopAccepting();
  // The drain deadline passed: exchanges still in flight are cut (reason draining), tunnels are
  // closed politely. `force` (a second SIGTERM/SIGINT): everything is closed at once.
  void stopNow(bool force);
  // Rollback: close every upgrade tunnel to a backend that is not its route's stable one; logs
  // `tunnels_closed` with the count.
  void closeTunnelsOffStable();
  bool finished() const { return finished_.load(); }
  // Open client connections (any thread; for log lines).
  size_t openConnections() const { return open_connections_.load(std::memory_order_relaxed); }

  // ---- loop thread only ----
  uv_loop_t* loop() override { return &loop_; }
  uint32_t id() const { return id_; }
  const std::shared_ptr<const Snapshot>& snapshot() const override { return snapshot_; }
  bool draining() const override { return draining_; }
  bool poolsClosing() const override { return listeners_closed_; }
  bool listenersClosed() const override { return listeners_closed_; }
  // How long a connection accepted before the listeners closed may take to send its first byte.
  char* readBuffer() override { return read_buf_.get(); }
  static constexpr size_t kReadBufferSize = 64 * 1024;
  size_t readBufferSize() const override { return kReadBufferSize; }
  FastRng& rng() override { return rng_; }
  std::string& scratch() override { return scratch_; }
  // This worker's access log (null when the loop is not running).
  AccessLog* accessLog() override { return access_log_.get(); }
  int64_t nowMs() const override {
    return static_cast<int64_t>(uv_now(const_cast<uv_loop_t*>(&loop_)));
  }
  UpstreamRequestContext& upstreamContext() override { return *this; }

  // Pool for endpoint `e` of backend `b` of `snap` (pools outlive snapshots: keyed by address).
  UpstreamPool& pool(const Snapshot& snap, uint32_t b, uint32_t e) override;
  // Round-robin cursor for backend `b` of the current pool table.
  uint32_t nextEndpoint(uint32_t backend_index, uint32_t endpoint_count) override;

  // Request decoders are pooled so keep-alive requests reuse parser buffers while idle
  // connections hold none.
  RequestDecoder* acquireDecoder(RequestDecoderCallbacks& cb,
                                 const config::Limits& limits) override;
  void releaseDecoder(RequestDecoder* d) override;
  Stream* acquireStream() override;
  void releaseStream(Stream* s) override;

  // Timeout lists: a connection sits in exactly one. Deadlines are checked by a sweep timer.
  using ConnList = ConnectionContext::List;
  void moveConnection(DownstreamConnection* c, ConnList to) override;
  void connectionClosed(DownstreamConnection* c) override;  // frees it
  // Backend connections use their own TCP socket.
  Transport* upstreamTransport(UpstreamPool&) override { return nullptr; }
  void upstreamClosed(UpstreamConnection* u) override;  // frees it
  void upstreamCreated() override;
  void connectionOpened();
  size_t connectionCount() const { return connections_; }

 private:
  struct Listener {
    std::string name;
    uv_tcp_t tcp;
    Worker* worker;
    bool closing = false;
  };
  static void onAsync(uv_async_t* a);
  static void onAccept(uv_stream_t* server, int status);
  void rejectConnection(uv_stream_t* server);
  static void onSweep(uv_timer_t* t);
  void run();
  void closeListener(Listener* l);
  void maybeFinish();
  void closeListeners();
  void beginDrain();
  // Phase 2: when every exchange left is a tunnel, close the tunnels (once).
  void maybeCloseTunnels();
  void rebuildPoolTable();
  // The TLS settings of backend `b`'s pool for endpoint `e` under `snap` (null ctx: plain).
  static UpstreamTls upstreamTls(const Snapshot& snap, uint32_t b, uint32_t e);

  uint32_t id_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t sweep_{};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::function<void(Worker&)>> posted_;
  bool async_closed_ = false;  // guarded by mu_
  std::atomic<bool> finished_{false};

  std::shared_ptr<const Snapshot> snapshot_;
  std::shared_ptr<AccessLogSink> access_sink_;
  std::unique_ptr<AccessLog> access_log_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<char[]> read_buf_;
  std::string scratch_;
  FastRng rng_;
  bool draining_ = false;          // drain phase 1 or later: answers say Connection: close
  bool listeners_closed_ = false;  // drain phase 2 or later
  bool closing_tunnels_ = false;
  std::atomic<size_t> open_connections_{0};
  bool stopping_ = false;
  bool loop_closing_ = false;

  IntrusiveList<DownstreamConnection> header_list_, idle_list_, active_list_;
  size_t upstream_count_ = 0;
  size_t connections_ = 0;
  bool at_connection_limit_ = false;

  std::map<std::string, std::unique_ptr<UpstreamPool>> pools_;  // key: backend|address
  std::vector<std::vector<UpstreamPool*>> pool_table_;          // [backend][endpoint], current
  std::vector<uint32_t> rr_;
  const Snapshot* pool_table_snapshot_ = nullptr;

  std::vector<RequestDecoder*> free_decoders_;
  std::vector<Stream*> free_streams_;
};

}  // namespace cutover
