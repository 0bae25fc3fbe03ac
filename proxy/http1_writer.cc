#include "proxy/http1_writer.h"

#include <algorithm>

namespace cutover {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// Never forwarded, whatever Connection says (RFC 9110 §7.6.1, RFC 9112 §6.1). Content-Length is
// here because the writer emits framing itself.
bool alwaysHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return iequals(name, "te");
    case 7: return iequals(name, "upgrade") || iequals(name, "trailer");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 14: return iequals(name, "content-length");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

// Headers a Connection token cannot remove.
bool protectedHeader(std::string_view name) {
  switch (name.size()) {
    case 4: return iequals(name, "host");
    case 12: return iequals(name, "x-request-id");
    case 15: return iequals(name, "x-forwarded-for");
    case 17: return iequals(name, "x-forwarded-proto");
    default: return false;
  }
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

}  // namespace

void appendUint(std::string& out, uint64_t v) {
  char buf[24];
  int i = 0;
  do {
    buf[i++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (i > 0) out.push_back(buf[--i]);
}

HopByHop::HopByHop(const HeaderMap& h) {
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i) || !iequals(h.name(i), "connection")) continue;
    std::string_view v = h.value(i);
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view t = trim(v.substr(0, comma));
      if (!t.empty()) {
        if (n_ < kInline) {
          inline_[n_++] = t;
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
    if (iequals(inline_[i], name)) return true;
  }
  return !overflow_.empty() && std::binary_search(overflow_.begin(), overflow_.end(), lowered(name));
}

bool HopByHop::forwardable(std::string_view name) const {
  if (alwaysHopByHop(name)) return false;
  if (n_ == 0) return true;
  return protectedHeader(name) || !named(name);
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
    if (iequals(h.name(i), "x-forwarded-for")) last_xff = i;
    if (iequals(h.name(i), "host")) has_host = true;
  }
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    bool keep_upgrade = head.upgrade && iequals(name, "upgrade");
    if (!keep_upgrade && !hop.forwardable(name)) continue;
    if (iequals(name, "expect") || iequals(name, "x-forwarded-proto")) continue;
    out.append(name).append(": ").append(h.value(i));
    if (i == last_xff) out.append(", ").append(fwd.client_address);
    out.append("\r\n");
  }
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
  out.append("HTTP/1.1 ");
  appendUint(out, head.status);
  out.push_back(' ');
  out.append(head.reason.empty() ? reasonPhrase(head.status) : std::string_view(head.reason));
  out.append("\r\n");
  const HeaderMap& h = head.headers;
  HopByHop hop(h);
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string_view name = h.name(i);
    bool keep_upgrade = head.status == 101 && iequals(name, "upgrade");
    if (!keep_upgrade && !hop.forwardable(name)) continue;
    if (skip != nullptr && skip(ctx, name)) continue;
    out.append(name).append(": ").append(h.value(i)).append("\r\n");
  }
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

}  // namespace cutover
