#include "proxy/dns_resolver.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "proxy/log.h"

namespace cutover {

namespace {

constexpr uint64_t kFirstRetryMs = 1000;
constexpr uint64_t kMinNudgeGapMs = 1000;  // early lookups: at most one per name per second

// Sort key: family, then the address bytes (so 127.0.0.10 sorts after 127.0.0.9).
bool addressLess(const config::SocketAddress& a, const config::SocketAddress& b) {
  if (a.addr.ss_family != b.addr.ss_family) return a.addr.ss_family < b.addr.ss_family;
  if (a.addr.ss_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(&a.addr);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b.addr);
    return ntohl(x->sin_addr.s_addr) < ntohl(y->sin_addr.s_addr);
  }
  const auto* x = reinterpret_cast<const sockaddr_in6*>(&a.addr);
  const auto* y = reinterpret_cast<const sockaddr_in6*>(&b.addr);
  return std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) < 0;
}

std::string joinTexts(const DnsResolver::Addresses& set) {
  std::string out;
  for (const auto& a : set) out += (out.empty() ? "" : " ") + a.text;
  return out;
}

}  // namespace

bool socketAddressFrom(const sockaddr* sa, uint16_t port, config::SocketAddress& out) {
  char buffer[INET6_ADDRSTRLEN] = {};
  config::SocketAddress result;
  if (sa->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof(in));
    in.sin_port = htons(port);
    inet_ntop(AF_INET, &in.sin_addr, buffer, sizeof(buffer));
    std::memcpy(&result.addr, &in, sizeof(in));
    result.len = sizeof(in);
    result.text = std::string(buffer) + ":" + std::to_string(port);
  } else if (sa->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof(in6));
    in6.sin6_port = htons(port);
    inet_ntop(AF_INET6, &in6.sin6_addr, buffer, sizeof(buffer));
    std::memcpy(&result.addr, &in6, sizeof(in6));
    result.len = sizeof(in6);
    result.text = "[" + std::string(buffer) + "]:" + std::to_string(port);
  } else {
    return false;
  }
  out = std::move(result);
  return true;
}

// ---- DnsNudge -------------------------------------------------------------------------------

void DnsNudge::connectFailed(const config::Config& cfg, uint32_t b, uint32_t e) {
  if (b >= cfg.backends.size()) return;
  const config::Backend& be = cfg.backends[b];
  if (e >= be.endpoint_dns.size() || be.endpoint_dns[e] < 0) return;
  const std::string& name = be.dns[static_cast<size_t>(be.endpoint_dns[e])].text;
  std::lock_guard<std::mutex> lock(mutex_);
  if (async_ == nullptr) return;
  if (std::find(pending_.begin(), pending_.end(), name) == pending_.end()) pending_.push_back(name);
  uv_async_send(async_);
}

// ---- DnsResolver ----------------------------------------------------------------------------

struct DnsResolver::Lookup {
  uv_getaddrinfo_t req{};
  Entry* entry = nullptr;  // null: cancelled (name removed or resolver closed); just free
};

struct DnsResolver::Entry {
  struct Use {  // one backend listing this name, with its metric children
    std::string backend;
    prometheus::Counter* success = nullptr;
    prometheus::Counter* failure = nullptr;
    prometheus::Gauge* endpoints = nullptr;
    prometheus::Gauge* last_success = nullptr;
  };
  DnsResolver* owner = nullptr;
  std::string text, host;
  uint16_t port = 0;
  uint64_t refresh_ms = 30000;  // the smallest dns_refresh of the backends using it
  uv_timer_t timer{};
  Lookup* lookup = nullptr;  // in flight
  bool answered = false;     // a first answer (success or failure) came
  bool failing = false;      // the last lookup failed (logged once per transition)
  uint64_t retry_ms = 0;     // next failure backoff; 0 after a success
  uint64_t last_start = 0;   // uv_now at the last lookup start
  int64_t last_success_ms = 0;
  int64_t last_error_ms = 0;
  std::string last_error;
  Addresses addresses;  // the set in use (last good)
  std::vector<Use> uses;
};

DnsResolver::DnsResolver(uv_loop_t* loop, prometheus::Registry& registry,
                         std::function<void()> on_change)
    : loop_(loop),
      on_change_(std::move(on_change)),
      nudge_(std::make_shared<DnsNudge>()),
      resolutions_(prometheus::BuildCounter()
                       .Name("cutover_dns_resolutions_total")
                       .Help("DNS lookups of backend endpoint names, by result (failure includes "
                             "an answer without addresses).")
                       .Register(registry)),
      endpoints_(prometheus::BuildGauge()
                     .Name("cutover_dns_endpoints")
                     .Help("Addresses in use from a backend endpoint name (the last good answer).")
                     .Register(registry)),
      last_success_(prometheus::BuildGauge()
                        .Name("cutover_dns_last_success_timestamp_seconds")
                        .Help("Unix time of the last successful lookup of a backend endpoint name.")
                        .Register(registry)) {
  uv_async_init(loop_, &async_,
                [](uv_async_t* a) { static_cast<DnsResolver*>(a->data)->onNudge(); });
  async_.data = this;
  nudge_->async_ = &async_;
}

DnsResolver::~DnsResolver() = default;

void DnsResolver::track(const config::Config& file) {
  if (closed_) return;
  struct Want {
    const config::DnsName* name = nullptr;
    uint64_t refresh_ms = 0;
    std::vector<std::string> backends;
  };
  std::map<std::string, Want> want;
  for (const config::Backend& be : file.backends) {
    for (const config::DnsName& name : be.dns) {
      Want& w = want[name.text];
      uint64_t refresh = static_cast<uint64_t>(be.dns_refresh.count());
      w.refresh_ms = w.name == nullptr ? refresh : std::min(w.refresh_ms, refresh);
      w.name = &name;
      w.backends.push_back(be.name);
    }
  }
  // Removed names: their lookups are cancelled, their sets and gauges dropped.
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (want.count(it->first) != 0) {
      ++it;
      continue;
    }
    resolved_.erase(it->first);
    remove(it->second);
    it = entries_.erase(it);
  }
  for (auto& [text, w] : want) {
    Entry* entry = nullptr;
    auto found = entries_.find(text);
    bool added = found == entries_.end();
    if (added) {
      entry = new Entry();
      entry->owner = this;
      entry->text = text;
      entry->host = w.name->host;
      entry->port = w.name->port;
      uv_timer_init(loop_, &entry->timer);
      entry->timer.data = entry;
      entries_.emplace(text, entry);
    } else {
      entry = found->second;
    }
    // A changed interval applies from the next wait on; the current one runs out as planned.
    entry->refresh_ms = w.refresh_ms;
    // Metric children follow the backends listing the name; counters of a backend that stops
    // listing it stay (they must not go backwards), its gauges go.
    std::vector<Entry::Use> uses;
    for (const std::string& backend : w.backends) {
      auto old = std::find_if(entry->uses.begin(), entry->uses.end(),
                              [&](const Entry::Use& u) { return u.backend == backend; });
      if (old != entry->uses.end()) {
        uses.push_back(*old);
        continue;
      }
      Entry::Use use;
      use.backend = backend;
      use.success =
          &resolutions_.Add({{"backend", backend}, {"name", text}, {"result", "success"}});
      use.failure =
          &resolutions_.Add({{"backend", backend}, {"name", text}, {"result", "failure"}});
      use.endpoints = &endpoints_.Add({{"backend", backend}, {"name", text}});
      use.last_success = &last_success_.Add({{"backend", backend}, {"name", text}});
      use.endpoints->Set(static_cast<double>(entry->addresses.size()));
      if (entry->last_success_ms > 0) {
        use.last_success->Set(static_cast<double>(entry->last_success_ms) / 1000.0);
      }
      uses.push_back(use);
    }
    for (const Entry::Use& u : entry->uses) {
      bool kept = std::any_of(uses.begin(), uses.end(),
                              [&](const Entry::Use& n) { return n.backend == u.backend; });
      if (!kept) {
        endpoints_.Remove(u.endpoints);
        last_success_.Remove(u.last_success);
      }
    }
    entry->uses = std::move(uses);
    if (added) startLookup(*entry);
  }
}

bool DnsResolver::settled() const {
  return std::all_of(entries_.begin(), entries_.end(),
                     [](const auto& e) { return e.second->answered; });
}

void DnsResolver::startLookup(Entry& entry) {
  if (entry.lookup != nullptr) return;
  uv_timer_stop(&entry.timer);
  auto* lookup = new Lookup();
  lookup->entry = &entry;
  lookup->req.data = lookup;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  entry.last_start = uv_now(loop_);
  int rc = uv_getaddrinfo(loop_, &lookup->req, onLookupDone, entry.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    // Refused at once (no callback will come): a failed lookup, handled here. It only counts,
    // logs and schedules a retry; nothing calls back into the caller.
    delete lookup;
    onAnswer(entry, rc, nullptr);
    return;
  }
  entry.lookup = lookup;
}

void DnsResolver::onLookupDone(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  std::unique_ptr<Lookup> lookup(static_cast<Lookup*>(req->data));
  Entry* entry = lookup->entry;
  if (entry != nullptr) {
    entry->lookup = nullptr;
    entry->owner->onAnswer(*entry, status, res);
  }
  uv_freeaddrinfo(res);  // null-safe
}

void DnsResolver::onAnswer(Entry& entry, int status, const addrinfo* res) {
  Addresses set;
  for (const addrinfo* ai = status == 0 ? res : nullptr; ai != nullptr; ai = ai->ai_next) {
    config::SocketAddress address;
    if (ai->ai_addr != nullptr && socketAddressFrom(ai->ai_addr, entry.port, address)) {
      set.push_back(std::move(address));
    }
  }
  std::sort(set.begin(), set.end(), addressLess);
  set.erase(std::unique(set.begin(), set.end(),
                        [](const auto& a, const auto& b) { return a.text == b.text; }),
            set.end());
  entry.answered = true;
  if (set.empty()) {
    // Failure or an empty answer: keep the last good set; retry 1s, 2s, 4s … up to dns_refresh.
    entry.last_error = status != 0 ? uv_strerror(status) : "no IPv4 or IPv6 address";
    entry.last_error_ms = wallClockMs();
    for (const Entry::Use& u : entry.uses) u.failure->Increment();
    if (!entry.failing) {
      entry.failing = true;
      log::warn("dns_resolution_failed", {{"name", entry.text},
                                          {"error", entry.last_error},
                                          {"keeping", joinTexts(entry.addresses)}});
    }
    entry.retry_ms =
        entry.retry_ms == 0 ? kFirstRetryMs : std::min(entry.retry_ms * 2, entry.refresh_ms);
    schedule(entry, std::min(entry.retry_ms, entry.refresh_ms));
    return;
  }
  entry.last_success_ms = wallClockMs();
  entry.retry_ms = 0;
  for (const Entry::Use& u : entry.uses) {
    u.success->Increment();
    u.last_success->Set(static_cast<double>(entry.last_success_ms) / 1000.0);
  }
  if (entry.failing) {
    entry.failing = false;
    log::info("dns_resolution_recovered", {{"name", entry.text}});
  }
  schedule(entry, entry.refresh_ms);
  bool same = set.size() == entry.addresses.size() &&
              std::equal(set.begin(), set.end(), entry.addresses.begin(),
                         [](const auto& a, const auto& b) { return a.text == b.text; });
  if (same) return;
  log::info("dns_endpoints_changed", {{"name", entry.text},
                                      {"addresses", joinTexts(set)},
                                      {"previous", joinTexts(entry.addresses)}});
  entry.addresses = set;
  resolved_[entry.text] = std::move(set);
  for (const Entry::Use& u : entry.uses) {
    u.endpoints->Set(static_cast<double>(entry.addresses.size()));
  }
  if (on_change_) on_change_();
}

void DnsResolver::schedule(Entry& entry, uint64_t delay_ms) {
  uv_timer_start(&entry.timer, onTimer, delay_ms, 0);
}

void DnsResolver::onTimer(uv_timer_t* timer) {
  auto* entry = static_cast<Entry*>(timer->data);
  entry->owner->startLookup(*entry);
}

void DnsResolver::onNudge() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(nudge_->mutex_);
    names.swap(nudge_->pending_);
  }
  if (closed_) return;
  const uint64_t now = uv_now(loop_);
  for (const std::string& name : names) {
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second->lookup != nullptr) continue;
    Entry& entry = *it->second;
    const uint64_t earliest = entry.last_start + kMinNudgeGapMs;
    if (now >= earliest) {
      log::info("dns_early_lookup", {{"name", name}, {"why", "connect_error"}, {"in_ms", 0}});
      startLookup(entry);
      continue;
    }
    // Too soon after the last lookup: bring the next one forward to the earliest allowed time.
    const uint64_t wait = earliest - now;
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&entry.timer)) ||
        uv_timer_get_due_in(&entry.timer) > wait) {
      log::info("dns_early_lookup", {{"name", name}, {"why", "connect_error"}, {"in_ms", wait}});
      schedule(entry, wait);
    }
  }
}

void DnsResolver::remove(Entry* entry) {
  if (entry->lookup != nullptr) {
    entry->lookup->entry = nullptr;                               // its callback frees it
    uv_cancel(reinterpret_cast<uv_req_t*>(&entry->lookup->req));  // when it has not started yet
    entry->lookup = nullptr;
  }
  for (const Entry::Use& u : entry->uses) {
    endpoints_.Remove(u.endpoints);
    last_success_.Remove(u.last_success);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&entry->timer),
           [](uv_handle_t* h) { delete static_cast<Entry*>(h->data); });
}

void DnsResolver::close() {
  if (closed_) return;
  closed_ = true;
  {
    std::lock_guard<std::mutex> lock(nudge_->mutex_);
    nudge_->async_ = nullptr;
    nudge_->pending_.clear();
  }
  for (auto& [text, entry] : entries_) remove(entry);
  entries_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

void DnsResolver::appendJson(std::string& out) const {
  out += "[";
  bool first = true;
  for (const auto& [text, entry] : entries_) {
    if (!first) out += ",";
    first = false;
    out += "{\"name\":";
    appendJsonString(out, text);
    out += ",\"backends\":[";
    for (size_t i = 0; i < entry->uses.size(); ++i) {
      if (i > 0) out += ",";
      appendJsonString(out, entry->uses[i].backend);
    }
    out += "],\"addresses\":[";
    for (size_t i = 0; i < entry->addresses.size(); ++i) {
      if (i > 0) out += ",";
      appendJsonString(out, entry->addresses[i].text);
    }
    out += "],\"last_success\":";
    if (entry->last_success_ms > 0) {
      appendJsonTimestamp(out, entry->last_success_ms);
    } else {
      out += "null";
    }
    out += ",\"last_error\":";
    if (entry->last_error.empty()) {
      out += "null,\"last_error_at\":null";
    } else {
      appendJsonString(out, entry->last_error);
      out += ",\"last_error_at\":";
      appendJsonTimestamp(out, entry->last_error_ms);
    }
    out += ",\"failing\":";
    out += entry->failing ? "true" : "false";
    out += "}";
  }
  out += "]";
}

std::shared_ptr<const config::Config> withResolvedEndpoints(
    std::shared_ptr<const config::Config> file, const DnsResolver::Resolved& resolved) {
  bool any = std::any_of(file->backends.begin(), file->backends.end(),
                         [](const config::Backend& b) { return !b.dns.empty(); });
  if (!any) return file;
  auto cfg = std::make_shared<config::Config>(*file);
  for (config::Backend& be : cfg->backends) {
    if (be.dns.empty()) continue;
    be.endpoint_dns.assign(be.endpoints.size(), -1);
    for (size_t n = 0; n < be.dns.size(); ++n) {
      auto it = resolved.find(be.dns[n].text);
      if (it == resolved.end()) continue;
      for (const config::SocketAddress& address : it->second) {
        bool present = std::any_of(be.endpoints.begin(), be.endpoints.end(),
                                   [&](const auto& e) { return e.text == address.text; });
        if (present) continue;
        be.endpoints.push_back(address);
        be.endpoint_dns.push_back(static_cast<int32_t>(n));
      }
    }
  }
  return cfg;
}

}  // namespace cutover
