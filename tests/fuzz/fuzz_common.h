// Helpers shared by the libFuzzer targets: the input layout, the three ways of cutting a message
// into reads, printable escaping and a readable report when two transcripts differ.
//
// Input layout of the codec targets (seed files are written in it by make_corpus.py):
//   byte 0      flags: bits 0-1 how many cut points (0 and 3 mean 3), bit 2 small limits,
//               bit 3 the response answers a HEAD request (response target only)
//   bytes 1-6   three little-endian u16 cut seeds; cut i = seed i % (payload size + 1)
//   bytes 7..   the payload: raw HTTP/1 bytes as a peer would send them
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace cutover::fuzz {

inline constexpr size_t kPrefix = 7;

// Triage switches, off by default (CI runs without them). Each hides one class of finding so a
// run can look past it for others while that class is being fixed:
//   CUTOVER_FUZZ_STATUS_ONLY=1     compare an error's status, not its reason
//   CUTOVER_FUZZ_NO_EMPTY_READS=1  no zero-length reads in the cut run
//   CUTOVER_FUZZ_NO_SMALL_LIMITS=1 ignore the small-limits flag (default limits always)
inline bool triageSwitch(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && *v != '0';
}
inline bool statusOnly() {
  static const bool on = triageSwitch("CUTOVER_FUZZ_STATUS_ONLY");
  return on;
}
inline bool noEmptyReads() {
  static const bool on = triageSwitch("CUTOVER_FUZZ_NO_EMPTY_READS");
  return on;
}
inline bool smallLimits(uint8_t flags) {
  static const bool off = triageSwitch("CUTOVER_FUZZ_NO_SMALL_LIMITS");
  return !off && (flags & 4) != 0;
}

struct Input {
  uint8_t flags = 0;
  std::string_view payload;
  std::vector<size_t> cuts;  // sorted, within [0, payload.size()]
};

// False when the input is too short to carry the prefix.
inline bool parseInput(const uint8_t* data, size_t size, Input& in) {
  if (size < kPrefix) return false;
  in.flags = data[0];
  in.payload = std::string_view(reinterpret_cast<const char*>(data) + kPrefix, size - kPrefix);
  size_t n = in.flags & 3;
  if (n == 0) n = 3;
  for (size_t i = 0; i < n; ++i) {
    size_t seed = data[1 + 2 * i] | (static_cast<size_t>(data[2 + 2 * i]) << 8);
    in.cuts.push_back(seed % (in.payload.size() + 1));
  }
  std::sort(in.cuts.begin(), in.cuts.end());
  return true;
}

// The reads a peer's bytes arrive in: [begin, end) offsets into the payload.
using Reads = std::vector<std::pair<size_t, size_t>>;

inline Reads wholeReads(size_t size) { return {{0, size}}; }

inline Reads cutReads(size_t size, const std::vector<size_t>& cuts) {
  Reads r;
  size_t start = 0;
  for (size_t c : cuts) {
    // Empty reads are kept: a zero-length execute must be harmless.
    if (c > start || !noEmptyReads()) r.emplace_back(start, c);
    start = c;
  }
  r.emplace_back(start, size);
  return r;
}

inline Reads byteReads(size_t size) {
  Reads r;
  for (size_t i = 0; i < size; ++i) r.emplace_back(i, i + 1);
  return r;
}

inline std::string escape(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7f || c == '"') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

inline std::vector<std::string_view> lines(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    size_t nl = s.find('\n');
    if (nl == std::string_view::npos) nl = s.size() - 1;
    out.push_back(s.substr(0, nl));
    s.remove_prefix(nl + 1);
  }
  return out;
}

// Prints both transcripts from their first differing line, then aborts (a libFuzzer finding).
[[noreturn]] inline void mismatch(const char* what, std::string_view payload,
                                  const std::string& cuts, std::string_view name_a,
                                  const std::string& a, std::string_view name_b,
                                  const std::string& b) {
  std::vector<std::string_view> la = lines(a), lb = lines(b);
  size_t i = 0;
  while (i < la.size() && i < lb.size() && la[i] == lb[i]) ++i;
  std::fprintf(stderr, "\n=== %s: transcripts differ ===\npayload: \"%s\"\ncuts: %s\n", what,
               escape(payload).c_str(), cuts.c_str());
  std::fprintf(stderr, "common prefix (%zu lines):\n", i);
  for (size_t k = 0; k < i; ++k)
    std::fprintf(stderr, "    %.*s\n", int(la[k].size()), la[k].data());
  std::fprintf(stderr, "--- %.*s:\n", int(name_a.size()), name_a.data());
  for (size_t k = i; k < la.size(); ++k) {
    std::fprintf(stderr, "  - %.*s\n", int(la[k].size()), la[k].data());
  }
  std::fprintf(stderr, "+++ %.*s:\n", int(name_b.size()), name_b.data());
  for (size_t k = i; k < lb.size(); ++k) {
    std::fprintf(stderr, "  + %.*s\n", int(lb[k].size()), lb[k].data());
  }
  std::abort();
}

[[noreturn]] inline void fail(const char* message, std::string_view payload) {
  std::fprintf(stderr, "\n=== %s ===\npayload: \"%s\"\n", message, escape(payload).c_str());
  std::abort();
}

inline std::string cutsText(const std::vector<size_t>& cuts) {
  std::string s = "[";
  for (size_t c : cuts) s += (s.size() > 1 ? "," : "") + std::to_string(c);
  return s + "]";
}

}  // namespace cutover::fuzz
