#include "filters/rate_limit.h"

#include <array>
#include <charconv>
#include <cstring>

namespace cutover {

namespace {

// Appends text and numbers into a fixed stack buffer: the per-request path builds its headers
// without touching the heap. Sized for the longest block below with four 10-digit numbers.
class HeaderBuf {
 public:
  HeaderBuf& text(std::string_view s) {
    std::memcpy(buf_.data() + len_, s.data(), s.size());
    len_ += s.size();
    return *this;
  }
  HeaderBuf& number(uint32_t n) {
    auto [end, ec] = std::to_chars(buf_.data() + len_, buf_.data() + buf_.size(), n);
    (void)ec;  // cannot fail: the buffer has room for every block written here
    len_ = static_cast<size_t>(end - buf_.data());
    return *this;
  }
  std::string_view view() const { return {buf_.data(), len_}; }

 private:
  std::array<char, 160> buf_;
  size_t len_ = 0;
};

}  // namespace

RateLimitFactory::RateLimitFactory(const config::Config& cfg, StateStore& store, const Clock& clock)
    : clock_(clock) {
  routes_.reserve(cfg.routes.size());
  for (const config::Route& route : cfg.routes) {
    const std::optional<config::RateLimit>& limit =
        route.rate_limit ? route.rate_limit : cfg.rate_limit;
    if (!limit) {
      routes_.emplace_back();
      continue;
    }
    routes_.emplace_back(RouteLimit{*limit, store.rateLimitTable("route:" + route.name, *limit)});
  }
}

const RateLimitFactory::RouteLimit* RateLimitFactory::limitFor(int route) const {
  if (route < 0 || static_cast<size_t>(route) >= routes_.size()) return nullptr;
  const auto& r = routes_[static_cast<size_t>(route)];
  return r ? &*r : nullptr;
}

size_t RateLimitFactory::filterSize() const { return sizeof(RateLimitFilter); }

Filter* RateLimitFactory::createAt(void* mem) const {
  return constructFilter<RateLimitFilter>(mem, *this);
}

FilterStatus RateLimitFilter::onRequest(FilterCallbacks& cb) {
  const RateLimitFactory::RouteLimit* rl = factory_.limitFor(cb.info().route);
  if (rl == nullptr) return FilterStatus::Continue;
  const config::RateLimit& limit = rl->limit;

  std::string_view key;
  switch (limit.key) {
    case config::RateLimit::Key::ClientIp:
      key = cb.clientAddress();
      break;
    case config::RateLimit::Key::Header:
      key = cb.request().headers.get(limit.header);
      if (key.empty()) return FilterStatus::Continue;  // not counted, see the header comment
      break;
    case config::RateLimit::Key::Route:
      key = {};  // one bucket in this route's table
      break;
    case config::RateLimit::Key::ClientCert:
      key = cb.clientCertSubject();
      if (key.empty()) key = cb.clientAddress();
      break;
  }

  const TokenBucket::Decision d = rl->table->take(key, factory_.clock().nowNs());
  const uint32_t burst = rl->table->params().burst;
  if (!d.allowed && limit.mode == config::RateLimit::Mode::Enforce) {
    HeaderBuf h;
    h.text("Retry-After: ").number(d.retry_after_s).text("\r\n");
    h.text("RateLimit-Limit: ").number(burst).text("\r\n");
    h.text("RateLimit-Remaining: 0\r\n");
    h.text("RateLimit-Reset: ").number(d.retry_after_s).text("\r\n");
    cb.localReply(429, Reason::RateLimited, h.view());
    return FilterStatus::Responded;
  }
  if (!d.allowed) cb.info().rate_limited_dry_run = true;
  if (limit.response_headers) {
    std::array<char, 16> num;
    auto put = [&](std::string_view name, uint32_t value) {
      auto [end, ec] = std::to_chars(num.data(), num.data() + num.size(), value);
      (void)ec;  // 16 bytes hold any uint32_t
      cb.addResponseHeader(name,
                           std::string_view(num.data(), static_cast<size_t>(end - num.data())));
    };
    put("RateLimit-Limit", burst);
    put("RateLimit-Remaining", d.remaining);
    put("RateLimit-Reset", d.allowed ? d.reset_s : d.retry_after_s);
  }
  return FilterStatus::Continue;
}

}  // namespace cutover
