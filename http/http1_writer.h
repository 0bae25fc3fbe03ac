// The HTTP/1.1 wire format the proxy writes toward backends and clients, and the header-hygiene
// rule it applies, in one place.
//
// Hygiene (RFC 9110 §7.6.1): hop-by-hop headers and every header named in a Connection header are
// not forwarded, with two exceptions that a peer's Connection header cannot override:
//   - framing (Content-Length, Transfer-Encoding) is never copied: the writer emits it from the
//     framing the decoder parsed, so what the next hop reads is what we forward;
//   - Host and the forwarding headers the proxy owns (X-Forwarded-For, X-Forwarded-Proto,
//     X-Request-Id) are kept; naming them in Connection does not remove them.
// Header names and values reaching the writer were validated by the decoder (token names, no CR,
// LF or control bytes), so nothing written here can split a message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/http_message.h"

namespace cutover {

// Appends the decimal form of `v`.
void appendUint(std::string& out, uint64_t v);

// What the proxy adds to a request it forwards.
struct ForwardInfo {
  std::string_view client_address;  // appended to X-Forwarded-For
  std::string_view proto = "http";  // X-Forwarded-Proto (the client's value is replaced)
  std::string_view default_host;    // Host for a request that had none (HTTP/1.0)
};

// Request line (always HTTP/1.1), forwardable headers, Host when missing, X-Forwarded-For and
// -Proto, framing from the parsed head (Transfer-Encoding: chunked or Content-Length), and for an
// upgrade request its Upgrade header with "Connection: upgrade"; then the blank line.
void writeRequestHead(std::string& out, const RequestHead& head, const ForwardInfo& fwd);

// How the body of a forwarded response is delimited toward the client.
enum class BodyFraming : uint8_t {
  None,     // no framing header (no body, a tunnel, or a body delimited by close)
  Length,   // Content-Length from the backend's parsed head
  Chunked,  // Transfer-Encoding: chunked (the proxy chunk-encodes, or a HEAD/304 declares it)
};

// Status line and the backend's forwardable headers, then the framing header. A 101 keeps its
// Upgrade header. Headers for which `skip(ctx, name)` is true are left out (the caller writes its
// own). The caller appends its headers and the blank line.
using SkipHeader = bool (*)(const void* ctx, std::string_view name);
void writeResponseStart(std::string& out, const ResponseHead& head, BodyFraming framing,
                        SkipHeader skip = nullptr, const void* ctx = nullptr);

// A response the proxy makes up itself (a local reply): status line, Content-Type: text/plain,
// Content-Length and x-cutover-reason. The caller appends its own headers, then calls
// writeLocalReplyEnd. `body` empty means the default body, "<reason phrase> (<reason>)\n".
void writeLocalReplyStart(std::string& out, int status, std::string_view reason,
                          std::string_view body);
// Connection: close when `close`, the blank line, and the body unless `head_only`.
void writeLocalReplyEnd(std::string& out, int status, std::string_view reason,
                        std::string_view body, bool close, bool head_only);

// A complete response the proxy serves from a body it holds whole (the admin API): the status
// line, `headers` in order, Content-Length of `body`, Connection: close when `close`, the blank
// line, and the body unless `head_only` (a HEAD answer declares the length of the GET answer).
// These headers come from code, not from the decoder, so the writer checks them itself: framing
// and hop-by-hop headers are left out (the writer owns framing and connection management), and so
// is any header whose name is not a token or whose value holds CR, LF or another control byte.
void writeCompleteResponse(std::string& out, int status, const HeaderMap& headers,
                           std::string_view body, bool close, bool head_only);

// The interim answer to "Expect: 100-continue".
inline constexpr std::string_view k100Continue = "HTTP/1.1 100 Continue\r\n\r\n";

}  // namespace cutover
