// SipHash-2-4 with a 128-bit output (Aumasson & Bernstein): a keyed pseudo-random function.
//
// Used where an attacker picks the input (rate-limit keys taken from a client's header): with a
// secret random key nobody can find two inputs with the same 128-bit value, so a long key can be
// stored as its 16-byte hash, and the 64-bit halves are safe for hash tables (no hash flooding).
// No allocation; about 1.5 cycles per input byte.
#pragma once

#include <cstdint>
#include <string_view>

namespace cutover {

struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

struct Hash128 {
  uint64_t lo = 0;  // output bytes 0..7, little-endian
  uint64_t hi = 0;  // output bytes 8..15
  bool operator==(const Hash128&) const = default;
};

// SipHash-2-4-128 of `data` under `key` (the reference vectors use k0 = bytes 0..7 of the key,
// little-endian).
Hash128 sipHash128(const SipKey& key, std::string_view data);

// A key drawn from the kernel's random source once per process (on first use, thread-safe).
const SipKey& processSipKey();

}  // namespace cutover
