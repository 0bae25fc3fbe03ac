// Request path normalisation before routing, so what a route matches is what the backend serves.
//
// A backend that decodes the path (FastAPI, most frameworks) serves `/api/x`, `/api/%78`,
// `//api/x`, `/./api/x` and `/y/../api/x` alike; a router comparing raw bytes would send all but
// the first past the `/api/x` route and its limits. Following RFC 3986 §6.2.2 and Envoy's
// normalize_path / merge_slashes / path_with_escaped_slashes_action, in this order:
//
//   1. percent-escapes: malformed ones ("%zz", "%4" at the end) and "%00" are rejected; "%2F" and
//      "%5C" (encoded '/' and '\') are rejected, kept, or decoded as Http::escaped_slashes says;
//      with normalize_path, unreserved characters (ALPHA DIGIT - . _ ~) are decoded and the hex
//      digits of every other escape upper-cased ("%7e" → "~", "%3b" → "%3B");
//   2. merge_slashes: empty segments are dropped ("//a///b" → "/a/b"; a trailing '/' stays);
//   3. normalize_path: "." and ".." segments are removed, ".." never climbing above the root
//      ("/a/./b/../c" → "/a/c", "/../x" → "/x").
//
// Only the path is touched: the query ("?..." onwards) is kept byte for byte. A target that does
// not start with '/' (asterisk-form "*") is left alone. Already-normal paths, the common case, cost
// one scan and no write; others are rewritten in place (the result is never longer), so no call
// allocates. The result is a fixed point: normalising it again changes nothing.
#pragma once

#include <cstdint>
#include <string>

namespace cutover {

// The options, which the config's `http:` section carries (config::Http derives from this).
struct PathOptions {
  enum class EscapedSlashes : uint8_t { Reject, Keep, Decode };  // what %2F and %5C do
  bool normalize_path = true;  // RFC 3986 §6: decode unreserved escapes, uppercase the others,
                               // remove dot-segments
  bool merge_slashes = true;   // "//" → "/"
  EscapedSlashes escaped_slashes = EscapedSlashes::Reject;  // Reject answers 400
  bool operator==(const PathOptions&) const = default;
};

enum class PathStatus : uint8_t {
  Unchanged,  // already normal
  Rewritten,  // `target` now holds the normal form
  Invalid,    // rejected (400); `target` is left as it was
};

PathStatus normalizePath(std::string& target, const PathOptions& options);

}  // namespace cutover
