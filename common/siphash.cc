#include "common/siphash.h"

#include <sys/random.h>

#include <cstring>
#include <random>

namespace cutover {

namespace {

inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

inline uint64_t load64le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct State {
  uint64_t v0, v1, v2, v3;
  void round() {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }
};

}  // namespace

Hash128 sipHash128(const SipKey& key, std::string_view data) {
  State s{0x736f6d6570736575ULL ^ key.k0, 0x646f72616e646f6dULL ^ key.k1,
          0x6c7967656e657261ULL ^ key.k0, 0x7465646279746573ULL ^ key.k1};
  s.v1 ^= 0xee;  // 128-bit output variant
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  const size_t whole = n & ~size_t{7};
  for (size_t i = 0; i < whole; i += 8) {
    const uint64_t m = load64le(p + i);
    s.v3 ^= m;
    s.round();
    s.round();
    s.v0 ^= m;
  }
  uint64_t last = static_cast<uint64_t>(n & 0xff) << 56;
  for (size_t i = 0; i < (n & 7); ++i) last |= static_cast<uint64_t>(p[whole + i]) << (8 * i);
  s.v3 ^= last;
  s.round();
  s.round();
  s.v0 ^= last;
  s.v2 ^= 0xee;
  for (int i = 0; i < 4; ++i) s.round();
  Hash128 out;
  out.lo = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  s.v1 ^= 0xdd;
  for (int i = 0; i < 4; ++i) s.round();
  out.hi = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  return out;
}

const SipKey& processSipKey() {
  static const SipKey key = [] {
    SipKey k;
    unsigned char bytes[16];
    size_t got = 0;
    while (got < sizeof(bytes)) {
      const ssize_t r = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
      if (r <= 0) break;  // only before the pool is seeded at early boot, or EINTR
      got += static_cast<size_t>(r);
    }
    if (got < sizeof(bytes)) {
      std::random_device rd;  // still unpredictable to a remote client
      for (auto& b : bytes) b = static_cast<unsigned char>(rd());
    }
    k.k0 = load64le(bytes);
    k.k1 = load64le(bytes + 8);
    return k;
  }();
  return key;
}

}  // namespace cutover
