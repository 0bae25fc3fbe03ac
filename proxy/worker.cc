#include "proxy/worker.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "http/http1_codec.h"
#include "net/tcp_transport.h"
#include "proxy/backend_tls.h"
#include "proxy/downstream_connection.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/stream.h"
#include "proxy/tls_metrics.h"
#include "proxy/upstream.h"

namespace cutover {

namespace {
constexpr uint64_t kSweepMs = 100;
constexpr size_t kMaxFreeDecoders = 1024;
constexpr size_t kMaxFreeStreams = 1024;

// A decoder's callbacks are rebound when it is reused by another connection.
struct NullRequestCallbacks final : RequestDecoderCallbacks {
  void onRequestHead(RequestHead&) override {}
  void onRequestBody(const char*, size_t) override {}
  void onRequestComplete() override {}
};
}  // namespace

Worker::Worker(uint32_t id, std::shared_ptr<const Snapshot> snapshot,
               std::shared_ptr<AccessLogSink> access_sink)
    : id_(id),
      snapshot_(std::move(snapshot)),
      access_sink_(std::move(access_sink)),
      read_buf_(new char[kReadBufferSize]),
      rng_(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
           (static_cast<uint64_t>(id) << 32)) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, onAsync);
  async_.data = this;
  uv_timer_init(&loop_, &sweep_);
  sweep_.data = this;
}

Worker::~Worker() {
  for (RequestDecoder* d : free_decoders_) delete d;
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  uv_timer_start(&sweep_, onSweep, kSweepMs, kSweepMs);
  const config::AccessLog& al = snapshot_->config->access_log;
  AccessLog::Options opts;
  opts.mode = al.mode;
  opts.sample = al.sample;
  opts.seed ^= static_cast<uint64_t>(id_) << 17;
  access_log_ = std::make_unique<AccessLog>(&loop_, access_sink_, opts);
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Every handle is closed by now; the loop itself can go.
  uv_loop_close(&loop_);
  finished_.store(true);
}

void Worker::post(std::function<void(Worker&)> fn) {
  // Under the lock so that a send never races the async handle's close (maybeFinish sets
  // async_closed_ under the same lock before closing it). Work posted to a finished loop is
  // dropped: nothing is left there to act on it.
  std::lock_guard<std::mutex> lock(mu_);
  if (async_closed_) return;
  posted_.push_back(std::move(fn));
  uv_async_send(&async_);
}

void Worker::onAsync(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  std::vector<std::function<void(Worker&)>> work;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    work.swap(self->posted_);
  }
  for (auto& fn : work) fn(*self);
}

void Worker::setSnapshot(std::shared_ptr<const Snapshot> s) {
  post([s = std::move(s)](Worker& w) {
    w.snapshot_ = s;
    w.pool_table_snapshot_ = nullptr;
    if (w.access_log_) {
      w.access_log_->configure(s->config->access_log.mode, s->config->access_log.sample);
    }
  });
}

void Worker::addListener(const std::string& name, int fd) {
  post([name, fd](Worker& w) {
    auto l = std::make_unique<Listener>();
    l->name = name;
    l->worker = &w;
    uv_tcp_init(&w.loop_, &l->tcp);
    l->tcp.data = l.get();
    uv_tcp_open(&l->tcp, fd);
    uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), 4096, onAccept);
    w.listeners_.push_back(std::move(l));
  });
}

void Worker::removeListener(const std::string& name) {
  post([name](Worker& w) {
    for (auto& l : w.listeners_) {
      if (l->name == name && !l->closing) w.closeListener(l.get());
    }
  });
}

void Worker::closeListener(Listener* l) {
  l->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), [](uv_handle_t* h) {
    auto* lst = static_cast<Listener*>(h->data);
    Worker* w = lst->worker;
    for (auto it = w->listeners_.begin(); it != w->listeners_.end(); ++it) {
      if (it->get() == lst) {
        w->listeners_.erase(it);
        break;
      }
    }
  });
}

void Worker::onAccept(uv_stream_t* server, int status) {
  auto* l = static_cast<Listener*>(server->data);
  Worker* w = l->worker;
  if (status != 0 || w->listeners_closed_) return;
  if (w->connections_ >= w->snapshot_->config->limits.max_connections_per_worker) {
    w->rejectConnection(server);
    return;
  }
  // The listener's settings from the running config, by name (a reload may have changed them).
  bool proxy_protocol = false;
  int index = -1;
  const auto& listeners = w->snapshot_->config->listeners;
  for (size_t i = 0; i < listeners.size(); ++i) {
    if (listeners[i].name != l->name) continue;
    proxy_protocol = listeners[i].proxy_protocol;
    index = static_cast<int>(i);
  }
  auto* c = new DownstreamConnection(*w);
  w->connectionOpened();
  c->start(server, proxy_protocol, index);
}

// Accepts and closes at once: leaving the connection in the kernel's queue would only delay the
// refusal, and the listener would keep reporting it.
void Worker::rejectConnection(uv_stream_t* server) {
  acceptAndClose(&loop_, server);
  if (snapshot_->metrics) snapshot_->metrics->downstream_rejected->Increment();
  if (!at_connection_limit_) {
    at_connection_limit_ = true;  // logged once per episode, not once per connection
    log::warn("connection_limit_reached", {{"worker", id_},
                                           {"max_connections_per_worker",
                                            snapshot_->config->limits.max_connections_per_worker}});
  }
}

void Worker::drain() {
  post([](Worker& w) { w.beginDrain(); });
}

void Worker::beginDrain() {
  if (draining_) return;
  draining_ = true;
  // Only between requests: a connection reading a head or in an exchange closes after its answer,
  // and one that has not sent a request yet is served first (it may have been accepted just now).
  std::vector<DownstreamConnection*> idle;
  for (DownstreamConnection* c = idle_list_.front(); c != nullptr; c = idle_list_.next(c)) {
    if (c->state() == DownstreamConnection::State::Idle && c->served()) idle.push_back(c);
  }
  for (DownstreamConnection* c : idle) c->drain();
  log::info(
      "drain_worker",
      {{"worker", id_}, {"phase", 1}, {"idle_closed", idle.size()}, {"connections", connections_}});
}

void Worker::closeListeners() {
  listeners_closed_ = true;
  for (auto& l : listeners_) {
    if (!l->closing) closeListener(l.get());
  }
}

void Worker::stopAccepting() {
  post([](Worker& w) {
    w.beginDrain();
    if (w.listeners_closed_) return;
    w.closeListeners();
    for (auto& [key, pool] : w.pools_) pool->closeIdle();
    // A connection accepted just before the listener closed may not have sent its request yet:
    // it gets a short grace instead of its idle timeout (moved to the back keeps the list sorted).
    const int64_t grace = w.nowMs() + kFreshGraceMs;
    std::vector<DownstreamConnection*> fresh;
    for (DownstreamConnection* c = w.idle_list_.front(); c != nullptr; c = w.idle_list_.next(c)) {
      if (c->state() == DownstreamConnection::State::Idle) fresh.push_back(c);
    }
    for (DownstreamConnection* c : fresh) {
      c->deadline_ms = std::min(c->deadline_ms, grace);
      w.moveConnection(c, ConnList::Idle);
    }
    size_t tunnels = 0;
    for (DownstreamConnection* c = w.active_list_.front(); c != nullptr;
         c = w.active_list_.next(c)) {
      if (c->state() == DownstreamConnection::State::Tunnel) ++tunnels;
    }
    log::info("drain_worker",
              {{"worker", w.id_},
               {"phase", 2},
               {"in_flight", w.header_list_.size() + w.active_list_.size() - tunnels},
               {"tunnels", tunnels},
               {"not_yet_sent", fresh.size()},
               {"connections", w.connections_}});
    w.maybeFinish();
  });
}

void Worker::maybeCloseTunnels() {
  if (closing_tunnels_ || !header_list_.empty() || active_list_.empty()) return;
  std::vector<DownstreamConnection*> tunnels;
  for (DownstreamConnection* c = active_list_.front(); c != nullptr; c = active_list_.next(c)) {
    if (c->state() != DownstreamConnection::State::Tunnel) return;  // an exchange in flight
    tunnels.push_back(c);
  }
  closing_tunnels_ = true;
  for (DownstreamConnection* c : tunnels) c->closeTunnel();
  closing_tunnels_ = false;
  log::info("drain_tunnels_closed",
            {{"worker", id_}, {"tunnels", tunnels.size()}, {"why", "nothing else in flight"}});
}

void Worker::stopNow(bool force) {
  post([force](Worker& w) {
    w.draining_ = true;
    w.stopping_ = true;
    w.closeListeners();
    std::vector<DownstreamConnection*> tunnels;
    size_t cut = 0;
    for (auto* list : {&w.header_list_, &w.idle_list_, &w.active_list_}) {
      while (DownstreamConnection* c = list->front()) {
        list->remove(c);
        c->list = static_cast<uint8_t>(ConnList::None);
        if (!force && c->state() == DownstreamConnection::State::Tunnel) {
          tunnels.push_back(c);  // closed politely below, once the lists are empty
          continue;
        }
        if (c->state() == DownstreamConnection::State::ReadingHead ||
            c->state() == DownstreamConnection::State::Active ||
            c->state() == DownstreamConnection::State::Tunnel) {
          ++cut;
        }
        c->onDrainDeadline();  // an exchange in progress is logged with reason draining
      }
    }
    for (DownstreamConnection* c : tunnels) c->closeTunnel();
    log::warn("drain_worker_stopped",
              {{"worker", w.id_}, {"cut", cut}, {"tunnels", tunnels.size()}, {"force", force}});
    for (auto& [key, pool] : w.pools_) pool->closeIdle();
    w.maybeFinish();
  });
}

void Worker::closeTunnelsOffStable() {
  post([](Worker& w) {
    // Collected first: closing moves a connection between lists (it is freed only later, in its
    // transport's close callback).
    std::vector<DownstreamConnection*> tunnels;
    for (auto* list : {&w.header_list_, &w.idle_list_, &w.active_list_}) {
      for (DownstreamConnection* c = list->front(); c != nullptr; c = list->next(c)) {
        if (c->state() == DownstreamConnection::State::Tunnel) tunnels.push_back(c);
      }
    }
    size_t closed = 0;
    for (DownstreamConnection* c : tunnels) closed += c->closeTunnelIfOffStable() ? 1 : 0;
    log::info("tunnels_closed", {{"worker", w.id_}, {"count", closed}, {"why", "rollback"}});
  });
}

void Worker::maybeFinish() {
  if (!listeners_closed_ || loop_closing_) return;
  maybeCloseTunnels();
  if (!header_list_.empty() || !idle_list_.empty() || !active_list_.empty()) return;
  if (connections_ > 0) return;
  loop_closing_ = true;
  for (auto& [key, pool] : pools_) pool->closeIdle();
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_), nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    async_closed_ = true;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  for (Stream* s : free_streams_) s->closeHandles();
  free_streams_.clear();
  // Flushes what is buffered; the loop ends once its timer and last write are done.
  if (access_log_) access_log_->close([] {});
}

void Worker::onSweep(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  int64_t now = w->nowMs();
  for (auto* list : {&w->header_list_, &w->idle_list_}) {
    // Deadlines in one list grow with insertion order (same timeout per list), so stop at the
    // first one still in the future.
    while (DownstreamConnection* c = list->front()) {
      if (c->deadline_ms > now) break;
      list->remove(c);
      c->list = static_cast<uint8_t>(ConnList::None);
      c->onDeadline();
    }
  }
  w->maybeFinish();
}

void Worker::moveConnection(DownstreamConnection* c, ConnList to) {
  switch (static_cast<ConnList>(c->list)) {
    case ConnList::Header:
      header_list_.remove(c);
      break;
    case ConnList::Idle:
      idle_list_.remove(c);
      break;
    case ConnList::Active:
      active_list_.remove(c);
      break;
    case ConnList::None:
      break;
  }
  c->list = static_cast<uint8_t>(to);
  switch (to) {
    case ConnList::Header:
      header_list_.pushBack(c);
      break;
    case ConnList::Idle:
      idle_list_.pushBack(c);
      break;
    case ConnList::Active:
      active_list_.pushBack(c);
      break;
    case ConnList::None:
      break;
  }
}

void Worker::connectionOpened() {
  ++connections_;
  open_connections_.fetch_add(1, std::memory_order_relaxed);
  if (snapshot_->metrics) snapshot_->metrics->downstream_connections->Increment();
}

void Worker::connectionClosed(DownstreamConnection* c) {
  moveConnection(c, ConnList::None);
  --connections_;
  open_connections_.fetch_sub(1, std::memory_order_relaxed);
  if (snapshot_->metrics) snapshot_->metrics->downstream_connections->Decrement();
  if (at_connection_limit_ &&
      connections_ + connections_ / 10 < snapshot_->config->limits.max_connections_per_worker) {
    at_connection_limit_ = false;  // well below the limit again: the next episode is logged
  }
  delete c;
  maybeFinish();
}

void Worker::upstreamCreated() {
  ++upstream_count_;
  if (snapshot_->metrics) snapshot_->metrics->upstream_connections->Increment();
}

void Worker::upstreamClosed(UpstreamConnection* u) {
  --upstream_count_;
  if (snapshot_->metrics) snapshot_->metrics->upstream_connections->Decrement();
  delete u;
}

UpstreamPool& Worker::pool(const Snapshot& snap, uint32_t b, uint32_t e) {
  if (&snap == snapshot_.get()) {
    if (pool_table_snapshot_ != &snap) rebuildPoolTable();
    return *pool_table_[b][e];
  }
  // A request still running on an older snapshot: look its pool up by address.
  const config::Backend& be = snap.config->backends[b];
  const config::SocketAddress& a = be.endpoints[e];
  std::string key = be.name + "|" + a.text;
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    it = pools_.emplace(key, std::make_unique<UpstreamPool>(*this, be.name, a.text, a.addr)).first;
    it->second->configure(be.pool.max_idle_per_endpoint,
                          static_cast<uint64_t>(be.pool.idle_timeout.count()));
    it->second->configureTls(upstreamTls(snap, b, e));
  }
  return *it->second;
}

UpstreamTls Worker::upstreamTls(const Snapshot& snap, uint32_t b, uint32_t e) {
  UpstreamTls t;
  if (b >= snap.backend_tls.size() || !snap.backend_tls[b]) return t;
  t.ctx = snap.backend_tls[b];
  t.sni = backendTlsName(snap.config->backends[b], e);
  if (snap.tls_metrics && b < snap.tls_metrics->backends.size()) {
    t.failures = snap.tls_metrics->backends[b];
  }
  return t;
}

void Worker::rebuildPoolTable() {
  const config::Config& cfg = *snapshot_->config;
  pool_table_.assign(cfg.backends.size(), {});
  rr_.resize(cfg.backends.size(), 0);
  for (size_t b = 0; b < cfg.backends.size(); ++b) {
    const config::Backend& be = cfg.backends[b];
    for (size_t e = 0; e < be.endpoints.size(); ++e) {
      const config::SocketAddress& a = be.endpoints[e];
      std::string key = be.name + "|" + a.text;
      auto it = pools_.find(key);
      if (it == pools_.end()) {
        it = pools_.emplace(key, std::make_unique<UpstreamPool>(*this, be.name, a.text, a.addr))
                 .first;
      }
      it->second->configure(be.pool.max_idle_per_endpoint,
                            static_cast<uint64_t>(be.pool.idle_timeout.count()));
      it->second->configureTls(
          upstreamTls(*snapshot_, static_cast<uint32_t>(b), static_cast<uint32_t>(e)));
      pool_table_[b].push_back(it->second.get());
    }
  }
  pool_table_snapshot_ = snapshot_.get();
}

uint32_t Worker::nextEndpoint(uint32_t backend_index, uint32_t endpoint_count) {
  if (backend_index >= rr_.size()) rr_.resize(backend_index + 1, 0);
  return rr_[backend_index]++ % endpoint_count;
}

RequestDecoder* Worker::acquireDecoder(RequestDecoderCallbacks& cb, const config::Limits& limits) {
  RequestDecoder::Limits l{limits.max_header_bytes, limits.max_uri_bytes,
                           limits.max_request_body_bytes};
  if (!free_decoders_.empty()) {
    RequestDecoder* d = free_decoders_.back();
    free_decoders_.pop_back();
    d->rebind(cb, l);
    return d;
  }
  return new RequestDecoder(cb, l);
}

void Worker::releaseDecoder(RequestDecoder* d) {
  if (free_decoders_.size() >= kMaxFreeDecoders) {
    delete d;
    return;
  }
  static NullRequestCallbacks null_callbacks;
  d->rebind(null_callbacks, RequestDecoder::Limits{});
  free_decoders_.push_back(d);
}

Stream* Worker::acquireStream() {
  if (!free_streams_.empty()) {
    Stream* s = free_streams_.back();
    free_streams_.pop_back();
    return s;
  }
  return new Stream(*this);
}

void Worker::releaseStream(Stream* s) {
  if (free_streams_.size() >= kMaxFreeStreams || loop_closing_) {
    s->closeHandles();  // freed in the timer's close callback
    return;
  }
  free_streams_.push_back(s);
}

}  // namespace cutover
