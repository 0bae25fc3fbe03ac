#include "common/path_normalize.h"

#include <cstring>
#include <string_view>

namespace cutover {

namespace {

using EscapedSlashes = PathOptions::EscapedSlashes;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool isUnreserved(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

enum class Escape : uint8_t { Keep, Decode, Reject };

Escape classify(int value, const PathOptions& o) {
  if (value == 0) return Escape::Reject;
  if (value == '/' || value == '\\') {
    switch (o.escaped_slashes) {
      case EscapedSlashes::Reject:
        return Escape::Reject;
      case EscapedSlashes::Keep:
        return Escape::Keep;
      case EscapedSlashes::Decode:
        return Escape::Decode;
    }
  }
  return o.normalize_path && isUnreserved(value) ? Escape::Decode : Escape::Keep;
}

bool isLowerHex(char c) { return c >= 'a' && c <= 'f'; }

// Whether the segment starting at p[i] (just after a '/') is "." or "..".
bool dotSegment(const char* p, size_t i, size_t n) {
  if (i >= n || p[i] != '.') return false;
  if (i + 1 == n || p[i + 1] == '/') return true;
  return p[i + 1] == '.' && (i + 2 == n || p[i + 2] == '/');
}

enum class Scan : uint8_t { Clean, Work, Invalid };

// The fast path: one pass that validates every escape and says whether anything would change.
Scan scan(const char* p, size_t n, const PathOptions& o) {
  bool work = false;
  for (size_t i = 0; i < n; ++i) {
    char c = p[i];
    if (c == '%') {
      if (i + 2 >= n) return Scan::Invalid;
      int hi = hexValue(p[i + 1]);
      int lo = hexValue(p[i + 2]);
      if (hi < 0 || lo < 0) return Scan::Invalid;
      Escape e = classify(hi * 16 + lo, o);
      if (e == Escape::Reject) return Scan::Invalid;
      if (e == Escape::Decode ||
          (o.normalize_path && (isLowerHex(p[i + 1]) || isLowerHex(p[i + 2])))) {
        work = true;
      }
      i += 2;
    } else if (c == '/' && !work) {
      if (o.merge_slashes && i + 1 < n && p[i + 1] == '/') work = true;
      if (o.normalize_path && dotSegment(p, i + 1, n)) work = true;
    }
  }
  return work ? Scan::Work : Scan::Clean;
}

// Step 1, in place: decode or upper-case escapes (all known valid). Returns the new length.
size_t rewriteEscapes(char* p, size_t n, const PathOptions& o) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  size_t w = 0;
  for (size_t r = 0; r < n; ++r) {
    if (p[r] != '%') {
      p[w++] = p[r];
      continue;
    }
    int hi = hexValue(p[r + 1]);
    int lo = hexValue(p[r + 2]);
    if (classify(hi * 16 + lo, o) == Escape::Decode) {
      p[w++] = static_cast<char>(hi * 16 + lo);
    } else {
      p[w++] = '%';
      p[w++] = o.normalize_path ? kHex[hi] : p[r + 1];
      p[w++] = o.normalize_path ? kHex[lo] : p[r + 2];
    }
    r += 2;
  }
  return w;
}

// Steps 2 and 3 in one pass over "/segment" units, in place (the output never overtakes the
// input). Dropping empty segments as they come is merging first, then removing dot-segments.
size_t rewriteSegments(char* p, size_t n, const PathOptions& o) {
  size_t w = 0;
  size_t r = 0;
  while (r < n) {
    // p[r] == '/': the unit is p[r..e).
    size_t s = r + 1;
    size_t e = s;
    while (e < n && p[e] != '/') ++e;
    const size_t len = e - s;
    const bool last = e == n;
    if (len == 0 && o.merge_slashes && !last) {
      r = e;
      continue;
    }
    if (o.normalize_path && (len == 1 || len == 2) && dotSegment(p, s, e)) {
      if (len == 2) {
        // ".." removes the last unit written (or nothing at the root).
        while (w > 0 && p[w - 1] != '/') --w;
        if (w > 0) --w;
      }
      r = e;
      if (last) p[w++] = '/';  // "/a/." and "/a/b/.." both end as "/a/"
      continue;
    }
    std::memmove(p + w, p + r, e - r);
    w += e - r;
    r = e;
  }
  return w;
}

}  // namespace

PathStatus normalizePath(std::string& target, const PathOptions& options) {
  if (target.empty() || target[0] != '/') return PathStatus::Unchanged;
  const size_t n = std::string_view(target).find('?');
  const size_t path_len = n == std::string_view::npos ? target.size() : n;
  char* p = target.data();
  switch (scan(p, path_len, options)) {
    case Scan::Clean:
      return PathStatus::Unchanged;
    case Scan::Invalid:
      return PathStatus::Invalid;
    case Scan::Work:
      break;
  }
  size_t len = rewriteEscapes(p, path_len, options);
  if (options.normalize_path || options.merge_slashes) len = rewriteSegments(p, len, options);
  target.erase(len, path_len - len);
  return PathStatus::Rewritten;
}

}  // namespace cutover
