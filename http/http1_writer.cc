#include "http/http1_writer.h"

#include <algorithm>
#include <string>
#include <vector>

namespace cutover {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// What the writer does with a header, by name: one switch on the length, then at most two
// comparisons, since this runs for every header of every forwarded head.
enum class Kind : uint8_t {
  Other,    // forwarded unless a Connection header names it (and it is not protected)
  Drop,     // hop-by-hop (RFC 9110 §7.6.1, RFC 9112 §6.1) or framing, which the writer emits
  Upgrade,  // hop-by-hop, kept for an upgrade request or a 101
  Owned,    // X-Forwarded-Proto, Expect: set by the proxy on requests; responses forward them
};

Kind headerKind(std::string_view n) {
  switch (n.size()) {
    case 2:
      return tokenIs(n, "te") ? Kind::Drop : Kind::Other;
    case 6:
      return tokenIs(n, "expect") ? Kind::Owned : Kind::Other;
    case 7:
      if (tokenIs(n, "upgrade")) return Kind::Upgrade;
      return tokenIs(n, "trailer") ? Kind::Drop : Kind::Other;
    case 10:
      return tokenIs(n, "connection") || tokenIs(n, "keep-alive") ? Kind::Drop : Kind::Other;
    case 14:
      return tokenIs(n, "content-length") ? Kind::Drop : Kind::Other;
    case 16:
      return tokenIs(n, "proxy-connection") ? Kind::Drop : Kind::Other;
    case 17:
      if (tokenIs(n, "transfer-encoding")) return Kind::Drop;
      return tokenIs(n, "x-forwarded-proto") ? Kind::Owned : Kind::Other;
    default:
      return Kind::Other;
  }
}

// Headers a Connection token cannot remove: Host and the forwarding headers the proxy owns.
bool protectedHeader(std::string_view n) {
  return tokenIs(n, "host") || tokenIs(n, "x-forwarded-for") || tokenIs(n, "x-request-id") ||
         tokenIs(n, "x-forwarded-proto");
}

std::string_view trim(std::string_view t) {
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  return t;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

// The tokens of a head's Connection headers (RFC 9110 §7.6.1): the headers they name are
// hop-by-hop too, except the protected ones. Built once per head; holds views into it.
class HopByHop {
 public:
  explicit HopByHop(const HeaderMap& headers);
  // True when a Connection token names `name` and it is not protected.
  bool drops(std::string_view name) const;

 private:
  bool named(std::string_view name) const;
  static constexpr size_t kInline = 8;
  // Plain pointer + length, left uninitialised: only [0, n_) is ever read, so a head without
  // Connection tokens (the common case) costs no stores here.
  struct Token {
    const char* data;
    size_t size;
  };
  Token inline_[kInline];
  size_t n_ = 0;
  std::vector<std::string> overflow_;  // past kInline tokens: lower-cased and sorted (rare)
};

HopByHop::HopByHop(const HeaderMap& h) {
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i) || !tokenIs(h.name(i), "connection")) continue;
    std::string_view v = h.value(i);
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view t = trim(v.substr(0, comma));
      if (!t.empty()) {
        if (n_ < kInline) {
          inline_[n_++] = Token{t.data(), t.size()};
        } else {
          overflow_.push_back(lowered(t));
        }
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  if (!overflow_.empty()) std::sort(overflow_.begin(), overflow_.end());
}

bool HopByHop::named(std::string_view name) const {
  for (size_t i = 0; i < n_; ++i) {
    if (iequals(std::string_view(inline_[i].data, inline_[i].size), name)) return true;
  }
  return !overflow_.empty() &&
         std::binary_search(overflow_.begin(), overflow_.end(), lowered(name));
}

bool HopByHop::drops(std::string_view name) const {
  return n_ != 0 && named(name) && !protectedHeader(name);
}

}  // namespace

void appendUint(std::string& out, uint64_t v) {
  char buf[20];  // UINT64_MAX has 20 digits; written from the end, appended once
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out.append(p, static_cast<size_t>(buf + sizeof buf - p));
}

void writeRequestHead(std::string& out, const RequestHead& head, const ForwardInfo& fwd) {
  out.append(head.method).push_back(' ');
  out.append(head.target).append(" HTTP/1.1\r\n");
  const HeaderMap& h = head.headers;
  HopByHop hop(h);
  // The client's address is appended to the last X-Forwarded-For line (or starts one).
  size_t last_xff = h.size();
  bool has_host = false;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    if (tokenIs(name, "x-forwarded-for")) last_xff = i;
    if (tokenIs(name, "host")) has_host = true;
  }
  LineRun run(out);
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    switch (headerKind(name)) {
      case Kind::Drop:
      case Kind::Owned:
        continue;
      case Kind::Upgrade:
        if (!head.upgrade) continue;
        break;
      case Kind::Other:
        if (hop.drops(name)) continue;
        break;
    }
    if (i == last_xff) {
      run.flush();
      out.append(name).append(": ").append(h.value(i));
      out.append(", ").append(fwd.client_address).append("\r\n");
    } else {
      run.add(h.line(i));
    }
  }
  run.flush();
  if (!has_host && !fwd.default_host.empty()) {
    out.append("Host: ").append(fwd.default_host).append("\r\n");
  }
  if (last_xff == h.size()) {
    out.append("X-Forwarded-For: ").append(fwd.client_address).append("\r\n");
  }
  out.append("X-Forwarded-Proto: ").append(fwd.proto).append("\r\n");
  if (head.chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  } else if (head.has_content_length) {
    out.append("Content-Length: ");
    appendUint(out, head.content_length);
    out.append("\r\n");
  }
  if (head.upgrade) out.append("Connection: upgrade\r\n");
  out.append("\r\n");
}

void writeResponseStart(std::string& out, const ResponseHead& head, BodyFraming framing,
                        SkipHeader skip, const void* ctx) {
  // The decoder accepts only three-digit status codes (100..999).
  char status[14] = {'H',
                     'T',
                     'T',
                     'P',
                     '/',
                     '1',
                     '.',
                     '1',
                     ' ',
                     static_cast<char>('0' + head.status / 100 % 10),
                     static_cast<char>('0' + head.status / 10 % 10),
                     static_cast<char>('0' + head.status % 10),
                     ' '};
  out.append(status, 13);
  out.append(head.reason.empty() ? reasonPhrase(head.status) : std::string_view(head.reason));
  out.append("\r\n");
  const HeaderMap& h = head.headers;
  HopByHop hop(h);
  LineRun run(out);  // unchanged headers go out as blocks of adjacent lines
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    switch (headerKind(name)) {
      case Kind::Drop:
        continue;
      case Kind::Upgrade:
        if (head.status != 101) continue;
        break;
      case Kind::Other:
      case Kind::Owned:
        if (hop.drops(name)) continue;
        break;
    }
    if (skip != nullptr && skip(ctx, name)) continue;
    run.add(h.line(i));
  }
  run.flush();
  switch (framing) {
    case BodyFraming::None:
      break;
    case BodyFraming::Length:
      out.append("Content-Length: ");
      appendUint(out, head.content_length);
      out.append("\r\n");
      break;
    case BodyFraming::Chunked:
      out.append("Transfer-Encoding: chunked\r\n");
      break;
  }
}

namespace {
size_t defaultBodySize(int status, std::string_view reason) {
  return reasonPhrase(status).size() + reason.size() + 4;  // "Phrase (reason)\n"
}
}  // namespace

void writeLocalReplyStart(std::string& out, int status, std::string_view reason,
                          std::string_view body) {
  out.append("HTTP/1.1 ");
  appendUint(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reasonPhrase(status));
  out.append("\r\nContent-Type: text/plain\r\nContent-Length: ");
  appendUint(out, body.empty() ? defaultBodySize(status, reason) : body.size());
  out.append("\r\nx-cutover-reason: ").append(reason).append("\r\n");
}

void writeLocalReplyEnd(std::string& out, int status, std::string_view reason,
                        std::string_view body, bool close, bool head_only) {
  if (close) out.append("Connection: close\r\n");
  out.append("\r\n");
  if (head_only) return;
  if (!body.empty()) {
    out.append(body);
    return;
  }
  out.append(reasonPhrase(status)).append(" (").append(reason).append(")\n");
}

namespace {
// RFC 9110 §5.6.2 tchar.
bool isTokenChar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}
bool validName(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n) {
    if (!isTokenChar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}
// Visible bytes, spaces, tabs and obs-text; no CR, LF or other control byte.
bool validValue(std::string_view v) {
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}
}  // namespace

void writeCompleteResponse(std::string& out, int status, const HeaderMap& headers,
                           std::string_view body, bool close, bool head_only) {
  out.append("HTTP/1.1 ");
  appendUint(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reasonPhrase(status)).append("\r\n");
  for (size_t i = 0; i < headers.size(); ++i) {
    if (headers.removed(i)) continue;
    std::string_view name = headers.name(i);
    std::string_view value = headers.value(i);
    if (!validName(name) || !validValue(value)) continue;
    const Kind kind = headerKind(name);
    if (kind == Kind::Drop || kind == Kind::Upgrade) continue;
    out.append(name).append(": ").append(value).append("\r\n");
  }
  out.append("Content-Length: ");
  appendUint(out, body.size());
  out.append("\r\n");
  if (close) out.append("Connection: close\r\n");
  out.append("\r\n");
  if (!head_only) out.append(body);
}

}  // namespace cutover
