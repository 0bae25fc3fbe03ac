// Backend endpoints given as DNS names (config::Backend::dns), resolved on the main loop without
// ever blocking it, and merged into the data-plane config as ordinary endpoints.
//
// One Entry per distinct name ("host:port" as written), shared by the backends that list it:
//
//   track() adds ──▶ Lookup ──answer──────────▶ Wait dns_refresh ──▶ Lookup ...
//                      │                             ▲
//                      └──error or no address──▶ Wait 1s, 2s, 4s … up to dns_refresh
//
//   - A lookup is uv_getaddrinfo (AF_UNSPEC, SOCK_STREAM) on libuv's thread pool. Its request is
//     heap-allocated and freed only in its callback; a name removed (or the resolver closed) while
//     its lookup is in flight marks the lookup cancelled, and the callback just frees it.
//   - An answer is sorted and deduplicated; when it differs from the set in use, on_change runs
//     (the server rebuilds its snapshot through withResolvedEndpoints).
//   - A failure or an empty answer keeps the last good set (so a DNS outage never empties a
//     backend) and is logged once per transition: dns_resolution_failed when a name starts failing,
//     dns_resolution_recovered when it answers again.
//   - A connect error to an address that came from a name nudges it (DnsNudge, thread-safe): an
//     early lookup, at most one per name per second.
//   - A reload calls track() again: added names start a lookup, removed ones stop, and unchanged
//     ones keep their set and timer (no re-resolution storm).
//
// Metrics (registered in the process registry; labels are config names only):
//   cutover_dns_resolutions_total{backend,name,result="success|failure"}
//   cutover_dns_endpoints{backend,name}                    addresses in the set in use
//   cutover_dns_last_success_timestamp_seconds{backend,name}
//
// Main thread only, except DnsNudge::connectFailed.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"

namespace cutover {

// What a worker calls when a connect fails; wakes the resolver on the main loop. Thread-safe.
// Shared by the resolver and every snapshot; after the resolver closes, calls do nothing.
class DnsNudge {
 public:
  // Endpoint `e` of backend `b` of the data-plane config `cfg` refused or timed out a connect: if
  // that address came from a name, the name is looked up again early.
  void connectFailed(const config::Config& cfg, uint32_t b, uint32_t e);

 private:
  friend class DnsResolver;
  std::mutex mutex_;
  uv_async_t* async_ = nullptr;       // the resolver's; null once it closed
  std::vector<std::string> pending_;  // names to look up early (distinct)
};

class DnsResolver {
 public:
  using Addresses = std::vector<config::SocketAddress>;
  // The set in use per name text; a name that never had a good answer is absent.
  using Resolved = std::map<std::string, Addresses>;

  // `on_change` runs on the loop, from a lookup's callback, whenever a name's set changes.
  DnsResolver(uv_loop_t* loop, prometheus::Registry& registry, std::function<void()> on_change);
  ~DnsResolver();
  DnsResolver(const DnsResolver&) = delete;
  DnsResolver& operator=(const DnsResolver&) = delete;

  // The names of the file config `file` (at start and on every reload). Never calls on_change.
  void track(const config::Config& file);
  const Resolved& resolved() const { return resolved_; }
  // Every tracked name has had its first answer (success or failure): readiness waits for it.
  bool settled() const;
  const std::shared_ptr<DnsNudge>& nudge() const { return nudge_; }
  // /stats: a JSON array, one object per name: name, backends, addresses, last_success,
  // last_error, last_error_at.
  void appendJson(std::string& out) const;
  // Cancels every lookup and closes every handle; the object must outlive the loop run that
  // delivers their callbacks (the server destroys it after uv_run returns). Idempotent.
  void close();

 private:
  struct Entry;
  struct Lookup;
  void startLookup(Entry& entry);
  void onAnswer(Entry& entry, int status, const struct addrinfo* res);
  void schedule(Entry& entry, uint64_t delay_ms);
  void remove(Entry* entry);
  void onNudge();
  static void onTimer(uv_timer_t* timer);
  static void onLookupDone(uv_getaddrinfo_t* req, int status, struct addrinfo* res);

  uv_loop_t* loop_;
  std::function<void()> on_change_;
  std::map<std::string, Entry*> entries_;  // by name text; freed in their timer's close callback
  Resolved resolved_;
  std::shared_ptr<DnsNudge> nudge_;
  uv_async_t async_{};
  bool closed_ = false;
  prometheus::Family<prometheus::Counter>& resolutions_;
  prometheus::Family<prometheus::Gauge>& endpoints_;
  prometheus::Family<prometheus::Gauge>& last_success_;
};

// The data-plane config: `file` with every backend's resolved addresses appended to its endpoints
// (after the numeric ones, skipping an address already present) and Backend::endpoint_dns set. A
// name without a good answer yet adds nothing. Returns `file` itself when it has no names.
std::shared_ptr<const config::Config> withResolvedEndpoints(
    std::shared_ptr<const config::Config> file, const DnsResolver::Resolved& resolved);

// "127.0.0.2:8080" / "[::1]:8080", as config::parseSocketAddress normalises them, for an address
// from getaddrinfo with `port` set. False for a family other than IPv4 and IPv6.
bool socketAddressFrom(const struct sockaddr* sa, uint16_t port, config::SocketAddress& out);

}  // namespace cutover
