// Canonical text for what a decoder reported: one line per event, every field of a head, so two
// runs over the same bytes can be compared as strings.
#pragma once

#include <string>

#include "common/http_message.h"
#include "http/http1_codec.h"
#include "tests/fuzz/fuzz_common.h"

namespace cutover::fuzz {

inline void appendHeaders(std::string& out, const HeaderMap& headers) {
  for (size_t i = 0; i < headers.size(); ++i) {
    if (headers.removed(i)) continue;
    out += "  header \"" + escape(headers.name(i)) + "\": \"" + escape(headers.value(i)) + "\"\n";
  }
}

inline std::string describe(const RequestHead& h) {
  std::string out = "head " + escape(h.method) + " \"" + escape(h.target) + "\" HTTP/" +
                    std::to_string(h.version_major) + "." + std::to_string(h.version_minor) + "\n";
  appendHeaders(out, h.headers);
  out += "  framing chunked=" + std::to_string(h.chunked) +
         " content_length=" + (h.has_content_length ? std::to_string(h.content_length) : "-") +
         " keep_alive=" + std::to_string(h.keep_alive) + " upgrade=" + std::to_string(h.upgrade) +
         " expect_continue=" + std::to_string(h.expect_continue) + "\n";
  return out;
}

inline std::string describe(const ResponseHead& h) {
  std::string out = "head " + std::to_string(h.status) + " \"" + escape(h.reason) + "\" HTTP/" +
                    std::to_string(h.version_major) + "." + std::to_string(h.version_minor) + "\n";
  appendHeaders(out, h.headers);
  out += "  framing chunked=" + std::to_string(h.chunked) +
         " content_length=" + (h.has_content_length ? std::to_string(h.content_length) : "-") +
         " keep_alive=" + std::to_string(h.keep_alive) + "\n";
  return out;
}

inline std::string describe(const DecodeError& e) {
  return std::to_string(e.status) + (statusOnly() ? "" : " " + std::string(e.reason));
}

// The raw bytes of a head the decoder accepted (from the end of the previous message to the LF
// that ended this head), checked against RFC 9112's line rules: empty lines (CRLF) may come
// first; every line ends in CRLF (no bare LF, no bare CR); no line starts with SP or HTAB
// (obs-fold); no control bytes but HTAB; the head ends with an empty line. Returns what is wrong,
// or nullptr.
inline const char* headSyntaxFault(std::string_view raw) {
  while (raw.substr(0, 2) == "\r\n") raw.remove_prefix(2);
  if (raw.size() < 4 || raw.substr(raw.size() - 4) != "\r\n\r\n") return "missing final CRLFCRLF";
  for (size_t i = 0; i < raw.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == '\n' && (i == 0 || raw[i - 1] != '\r')) return "bare LF";
    if (c == '\r' && (i + 1 == raw.size() || raw[i + 1] != '\n')) return "bare CR";
    if (c == '\n' && i + 1 < raw.size() && (raw[i + 1] == ' ' || raw[i + 1] == '\t')) {
      return "obs-fold";
    }
    if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f) {
      return "control byte";
    }
  }
  return nullptr;
}

// Collects events; body bytes are concatenated and written out when the message ends.
class Transcript {
 public:
  void head(std::string text) {
    flushBody();
    text_ += text;
  }
  void body(const char* data, size_t len) { body_.append(data, len); }
  void line(const std::string& s) {
    flushBody();
    text_ += s + "\n";
  }
  const std::string& text() {
    flushBody();
    return text_;
  }

 private:
  void flushBody() {
    if (body_.empty()) return;
    text_ += "  body " + std::to_string(body_.size()) + " \"" + escape(body_) + "\"\n";
    body_.clear();
  }
  std::string text_;
  std::string body_;
};

}  // namespace cutover::fuzz
