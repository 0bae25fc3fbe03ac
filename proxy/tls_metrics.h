// TLS listener metrics, a block of their own beside proxy/metrics.h (same registry, same rules:
// families registered once, label children resolved per snapshot, nothing looked up per
// handshake):
//   cutover_tls_handshakes_total{listener,version}          version TLSv1.2 | TLSv1.3
//   cutover_tls_handshake_failures_total{listener,reason}   no_shared_cipher, protocol_version,
//                                                           no_client_cert, bad_certificate,
//                                                           not_tls, timeout, other
//   cutover_tls_certificate_not_after_seconds{listener,cert} unix time the certificate expires
//   cutover_upstream_tls_failures_total{backend,reason}     failed handshakes to TLS backends:
//                                                           the reasons above and verify_failed
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>
#include <memory>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "net/tls_transport.h"
#include "proxy/listener_tls.h"

namespace cutover {

struct ListenerTlsMetrics {
  prometheus::Counter* tls12 = nullptr;
  prometheus::Counter* tls13 = nullptr;
  std::array<prometheus::Counter*, kTlsFailureCount> failures{};
  void handshake(std::string_view version) const {
    (version == "TLSv1.3" ? tls13 : tls12)->Increment();
  }
  void failure(TlsFailure f) const { failures[static_cast<size_t>(f)]->Increment(); }
};

// By listener index; entries of plain listeners have null pointers and are never used.
struct SnapshotTlsMetrics {
  std::vector<ListenerTlsMetrics> listeners;
  // By backend index, by upstreamTlsReasonName index; null for plain backends.
  std::vector<std::array<prometheus::Counter*, kUpstreamTlsReasons>> backends;
};

class TlsMetrics {
 public:
  explicit TlsMetrics(prometheus::Registry& registry);
  // Main thread, once per snapshot.
  std::shared_ptr<const SnapshotTlsMetrics> forConfig(const config::Config& config);
  // The expiry gauges of the running contexts; stale series (replaced certificates) removed.
  void setCertificates(const config::Config& config, const ListenerTlsContexts& contexts);

 private:
  prometheus::Family<prometheus::Counter>& handshakes_;
  prometheus::Family<prometheus::Counter>& failures_;
  prometheus::Family<prometheus::Gauge>& not_after_;
  prometheus::Family<prometheus::Counter>& upstream_failures_;
  std::vector<prometheus::Gauge*> not_after_children_;
};

}  // namespace cutover
