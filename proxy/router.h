// Route matching and the weighted split: pure functions over the immutable config, so they are
// unit-tested without sockets.
//
// The split is integer arithmetic decided at load time (config::Route::thresholds): a request gets
// a bucket 0..9999 and takes the first split entry whose threshold is above it. The bucket comes
// from a hash of the sticky key when one is configured, else from the worker's PRNG. `new` owns
// the low buckets, so raising its weight only moves keys from legacy to new, never back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/http_message.h"
#include "config/config.h"

namespace cutover {

// First route matching the request, in config order, or -1. Uses cfg.route_table when the loader
// built one, else scans.
int matchRoute(const config::Config& cfg, const RequestHead& req);
// The same answer by comparing every route in turn (the reference the table is tested against).
int matchRouteLinear(const config::Config& cfg, const RequestHead& req);

// FNV-1a 64 → bucket in 0..9999. Stable across processes and releases (users stay put).
uint32_t stickyBucket(std::string_view key);

// Entry index in route.split for `bucket`.
uint32_t pickSplit(const config::Route& route, uint32_t bucket);

// The sticky key of this request for `route`, or empty when none applies (no key configured, or
// the cookie/header is absent). `client_ip` is used for Sticky::Kind::ClientIp.
std::string_view stickyKey(const config::Route& route, const RequestHead& req,
                           std::string_view client_ip);

// The Set-Cookie value that keeps `key` for an inserting sticky cookie: HttpOnly, SameSite=Lax,
// Max-Age from the config, Secure when configured or when the request came over https.
std::string stickyCookie(const config::Sticky& sticky, std::string_view key,
                         std::string_view proto);

// Value of cookie `name` in a Cookie header, or empty.
std::string_view findCookie(std::string_view cookie_header, std::string_view name);

// Small, fast per-thread PRNG (xorshift64*).
class FastRng {
 public:
  explicit FastRng(uint64_t seed) : s_(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 2685821657736338717ull;
  }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>((next() >> 32) % n); }

 private:
  uint64_t s_;
};

}  // namespace cutover
