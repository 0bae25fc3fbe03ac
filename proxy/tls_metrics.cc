#include "proxy/tls_metrics.h"

#include <algorithm>

namespace cutover {

TlsMetrics::TlsMetrics(prometheus::Registry& registry)
    : handshakes_(prometheus::BuildCounter()
                      .Name("cutover_tls_handshakes_total")
                      .Help("Completed TLS handshakes on listeners, by listener and version.")
                      .Register(registry)),
      failures_(prometheus::BuildCounter()
                    .Name("cutover_tls_handshake_failures_total")
                    .Help("Failed TLS handshakes on listeners, by listener and reason.")
                    .Register(registry)),
      not_after_(prometheus::BuildGauge()
                     .Name("cutover_tls_certificate_not_after_seconds")
                     .Help("Unix time at which a listener certificate in use expires.")
                     .Register(registry)),
      upstream_failures_(prometheus::BuildCounter()
                             .Name("cutover_upstream_tls_failures_total")
                             .Help("Failed TLS handshakes to backends, by backend and reason.")
                             .Register(registry)) {}

std::shared_ptr<const SnapshotTlsMetrics> TlsMetrics::forConfig(const config::Config& config) {
  auto m = std::make_shared<SnapshotTlsMetrics>();
  m->listeners.resize(config.listeners.size());
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const config::Listener& l = config.listeners[i];
    if (!l.tls) continue;
    ListenerTlsMetrics& lm = m->listeners[i];
    lm.tls12 = &handshakes_.Add({{"listener", l.name}, {"version", "TLSv1.2"}});
    lm.tls13 = &handshakes_.Add({{"listener", l.name}, {"version", "TLSv1.3"}});
    for (size_t f = 0; f < kTlsFailureCount; ++f) {
      lm.failures[f] = &failures_.Add(
          {{"listener", l.name}, {"reason", tlsFailureName(static_cast<TlsFailure>(f))}});
    }
  }
  m->backends.resize(config.backends.size());
  for (size_t b = 0; b < config.backends.size(); ++b) {
    const config::Backend& be = config.backends[b];
    if (!be.tls) continue;
    for (size_t r = 0; r < kUpstreamTlsReasons; ++r) {
      m->backends[b][r] =
          &upstream_failures_.Add({{"backend", be.name}, {"reason", upstreamTlsReasonName(r)}});
    }
  }
  return m;
}

void TlsMetrics::setCertificates(const config::Config& config,
                                 const ListenerTlsContexts& contexts) {
  std::vector<prometheus::Gauge*> now;
  for (size_t i = 0; i < config.listeners.size() && i < contexts.size(); ++i) {
    if (!contexts[i]) continue;
    for (const TlsCertificateInfo& c : contexts[i]->certificates()) {
      prometheus::Gauge* g =
          &not_after_.Add({{"listener", config.listeners[i].name}, {"cert", c.name}});
      g->Set(static_cast<double>(c.not_after_s));
      now.push_back(g);
    }
  }
  for (prometheus::Gauge* g : not_after_children_) {
    if (std::find(now.begin(), now.end(), g) == now.end()) not_after_.Remove(g);
  }
  not_after_children_ = std::move(now);
}

}  // namespace cutover
