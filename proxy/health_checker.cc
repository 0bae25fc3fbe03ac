#include "proxy/health_checker.h"

#include <chrono>

#include "common/clock.h"
#include "http/http1_codec.h"
#include "net/tcp_transport.h"
#include "net/tls_transport.h"
#include "policy/health_state.h"
#include "proxy/backend_tls.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"

namespace cutover {

namespace {
constexpr size_t kCheckReadBuffer = 4096;
}  // namespace

// One check in flight: its own connection and parser. Freed in its transport's close callback.
struct Check final : TransportCallbacks, ResponseDecoderCallbacks {
  HealthChecker::Probe* probe;
  TcpTransport tcp;
  std::unique_ptr<TlsTransport> tls;  // over tcp, for a TLS backend
  Transport* transport = &tcp;
  ResponseDecoder decoder{*this};
  char buf[kCheckReadBuffer];
  int status = 0;
  bool done = false;

  Check(HealthChecker::Probe* p, uv_loop_t* loop);
  void onTransportData(const char* data, size_t len) override;
  void onTransportEof() override;
  void onTransportError(int) override;
  void onTransportConnected() override;
  void onTransportClosed() override;
  void onResponseHead(ResponseHead& head) override { status = head.status; }
  void onResponseBody(const char*, size_t) override {}
  void onResponseComplete() override {}
  void conclude(bool pass);
};

struct HealthChecker::Probe {
  uv_timer_t timer{};
  std::shared_ptr<HealthState> state;
  size_t endpoint = 0;
  std::string backend;
  std::string address;
  sockaddr_storage addr{};
  std::string path;
  std::shared_ptr<const TlsClientContext> tls;  // null: plain
  std::string sni;
  uint64_t timeout_ms = 1000;
  Check* check = nullptr;  // in flight
  bool stopped = false;
  bool timer_closed = false;

  void schedule(uint64_t ms) { uv_timer_start(&timer, onTimer, ms, 0); }
  static void onTimer(uv_timer_t* t);
  void start();
  void result(bool pass);
  void stop();
  void maybeFree() {
    if (stopped && timer_closed && check == nullptr) delete this;
  }
};

void HealthChecker::Probe::onTimer(uv_timer_t* t) {
  auto* p = static_cast<Probe*>(t->data);
  if (p->stopped) return;
  if (p->check != nullptr) {
    // The check timed out.
    Check* c = p->check;
    c->conclude(false);
    return;
  }
  p->start();
}

Check::Check(HealthChecker::Probe* p, uv_loop_t* loop) : probe(p) {
  if (p->tls) {
    // Verified like the backend's connections (the address when no name is sent).
    std::string ip = p->address.substr(0, p->address.rfind(':'));
    if (ip.size() >= 2 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
    tls = std::make_unique<TlsTransport>(loop, tcp, p->tls, p->sni, ip);
    transport = tls.get();
  }
  transport->setCallbacks(this);
}

void HealthChecker::Probe::start() {
  check = new Check(this, timer.loop);
  int rc = check->transport->connect(timer.loop, reinterpret_cast<const sockaddr*>(&addr),
                                     check->buf, sizeof(check->buf));
  schedule(timeout_ms);  // the same timer bounds the check
  if (rc != 0) {
    Check* c = check;
    c->conclude(false);
  }
}

void HealthChecker::Probe::result(bool pass) {
  check = nullptr;
  if (stopped) {
    maybeFree();
    return;
  }
  bool was = state->healthy(endpoint);
  state->onCheckResult(endpoint, pass, monotonicNs());
  bool now = state->healthy(endpoint);
  if (was != now) {
    log::events().write(now ? log::Level::Info : log::Level::Warn, "endpoint_health",
                        {{"backend", backend}, {"endpoint", address}, {"healthy", now}});
  }
  auto delay = state->nextDelay(endpoint);
  schedule(static_cast<uint64_t>(delay.count()));
}

void HealthChecker::Probe::stop() {
  stopped = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), [](uv_handle_t* h) {
    auto* p = static_cast<Probe*>(h->data);
    p->timer_closed = true;
    p->maybeFree();
  });
  if (check != nullptr) check->conclude(false);
}

void Check::onTransportConnected() {
  std::string req = "GET " + probe->path + " HTTP/1.1\r\nHost: " + probe->address +
                    "\r\nUser-Agent: cutover-health-check\r\nConnection: close\r\n\r\n";
  decoder.expectResponseTo("GET");
  transport->write(req);
  transport->readStart();
}

void Check::onTransportData(const char* data, size_t len) {
  if (done) return;
  size_t used = 0;
  DecodeStatus st = decoder.execute(data, len, used);
  if (st == DecodeStatus::Error) {
    conclude(false);
  } else if (status != 0) {
    // The status line is all a check needs.
    conclude(status >= 200 && status < 400);
  }
}

void Check::onTransportEof() { conclude(status >= 200 && status < 400); }
void Check::onTransportError(int) { conclude(false); }

void Check::conclude(bool pass) {
  if (done) return;
  done = true;
  HealthChecker::Probe* p = probe;
  probe = nullptr;
  transport->close();
  if (!transport->initialized()) {
    // Never opened: no close callback will come.
    p->result(pass);
    delete this;
    return;
  }
  p->result(pass);
}

void Check::onTransportClosed() { delete this; }

HealthChecker::HealthChecker(uv_loop_t* loop) : loop_(loop) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::update(const Snapshot& snap) {
  std::map<std::string, Probe*> next;
  const config::Config& cfg = *snap.config;
  for (size_t b = 0; b < cfg.backends.size(); ++b) {
    const config::Backend& be = cfg.backends[b];
    const std::shared_ptr<HealthState>& state = snap.backends[b].health;
    if (!state) continue;
    for (size_t e = 0; e < be.endpoints.size(); ++e) {
      std::string key = be.name + "|" + be.endpoints[e].text;
      auto it = probes_.find(key);
      std::shared_ptr<const TlsClientContext> tls =
          b < snap.backend_tls.size() ? snap.backend_tls[b] : nullptr;
      if (it != probes_.end() && it->second->state == state) {
        it->second->tls = tls;  // the next check uses the reloaded context
        it->second->sni = backendTlsName(be, e);
        next[key] = it->second;
        probes_.erase(it);
        continue;
      }
      auto* p = new Probe;
      uv_timer_init(loop_, &p->timer);
      p->timer.data = p;
      p->state = state;
      p->endpoint = e;
      p->backend = be.name;
      p->address = be.endpoints[e].text;
      p->addr = be.endpoints[e].addr;
      p->path = be.health_check.path;
      p->tls = tls;
      p->sni = backendTlsName(be, e);
      p->timeout_ms = static_cast<uint64_t>(be.health_check.timeout.count());
      p->schedule(0);
      next[key] = p;
    }
  }
  for (auto& [key, p] : probes_) p->stop();
  probes_.swap(next);
}

void HealthChecker::stop() {
  for (auto& [key, p] : probes_) p->stop();
  probes_.clear();
}

}  // namespace cutover
