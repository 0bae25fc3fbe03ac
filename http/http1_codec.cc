// The only file that includes llhttp.h. C callbacks are static trampolines that cast
// parser->data and return an llhttp error code; nothing here throws.
#include "http/http1_codec.h"

#include <llhttp.h>

#include <cstring>
#include <string>

namespace cutover {

// Where the raw-byte scan of a message head stands.
enum class HeadScan : uint8_t {
  Start,      // before the start line: empty lines (CRLF) may precede it
  StartCr,    // CR of a leading empty line
  InLine,     // inside the start line or a header line
  LineStart,  // just after a line's CRLF: a header, a fold (rejected) or the blank line
  EndCr,      // CR of the blank line that ends the head
  Done,       // head ended; nothing more to scan until the next message
};

struct Http1ParserState {
  llhttp_t parser;
  const char* custom_reason = nullptr;  // our own rejection, set before returning HPE_USER
  int custom_status = 0;
  // The head's raw line structure, checked ahead of llhttp (see scanHead): llhttp 8.1 in strict
  // mode still unfolds obs-fold lines and takes "\r\n\n" as the end of a head.
  HeadScan scan = HeadScan::Start;
  uint32_t head_bytes = 0;    // raw bytes of the head from its start line's first byte
  uint32_t uri_bytes = 0;     // of the request target
  uint8_t spaces = 0;         // seen in the start line (the target is after the first)
  bool start_line = true;     // still in the start line
  bool prev_cr = false;       // the previous chunk ended in CR (a LF at offset 0 follows it)
  uint32_t field_bytes = 0;   // name bytes of the header line being read (0: empty name)
  bool interim_done = false;  // a 1xx interim response just ended; the real one follows
};

namespace {

// Header value bytes allowed: VCHAR, SP, HTAB, obs-text. llhttp's strict mode already refuses CR,
// LF and NUL inside values; this also refuses the other control characters it lets through.
bool validValueByte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

// Eight bytes at a time: a word with no byte below 0x20 and none equal to 0x7f is valid as a whole
// (bytes >= 0x80 are obs-text); only a word that might hold a bad byte (a tab, say) is checked
// byte by byte.
bool valueValid(std::string_view v) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  const char* p = v.data();
  size_t n = v.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    uint64_t below_space = (x - kOnes * 0x20) & ~x & kHigh;
    uint64_t y = x ^ (kOnes * 0x7f);
    uint64_t del = (y - kOnes) & ~y & kHigh;
    if ((below_space | del) == 0) continue;
    for (size_t k = i; k < i + 8; ++k) {
      if (!validValueByte(static_cast<unsigned char>(p[k]))) return false;
    }
  }
  for (; i < n; ++i) {
    if (!validValueByte(static_cast<unsigned char>(p[i]))) return false;
  }
  return true;
}

std::string_view trimOws(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

int fail(Http1ParserState& s, int status, const char* reason) {
  s.custom_status = status;
  s.custom_reason = reason;
  return HPE_USER;
}

}  // namespace

// Shared header accumulation for both directions.
struct Http1Trampolines {
  static Http1ParserState& st(llhttp_t* p) {
    // llhttp_t is the first member of Http1ParserState.
    return *reinterpret_cast<Http1ParserState*>(p);
  }

  // Header lines after the head was delivered are chunked trailers: never stored, so they cannot
  // become head fields of the forwarded message (like body bytes, they cost no memory). The
  // head and target limits are enforced on the raw bytes by scanHead.
  static int onHeaderField(llhttp_t* p, const char* at, size_t len, HeaderMap& headers,
                           bool trailer) {
    Http1ParserState& s = st(p);
    s.field_bytes += static_cast<uint32_t>(len);
    if (!trailer) headers.appendName(at, len);
    return HPE_OK;
  }
  static int onHeaderValue(llhttp_t*, const char* at, size_t len, HeaderMap& headers,
                           bool trailer) {
    if (!trailer) headers.appendValue(at, len);
    return HPE_OK;
  }
  // Completes one header line; rejects what llhttp let through (an empty name, control bytes).
  static int headerDone(Http1ParserState& s, HeaderMap& headers, bool trailer) {
    bool named = s.field_bytes != 0;
    s.field_bytes = 0;
    if (!named) return fail(s, 400, "empty_header_name");
    if (trailer) return HPE_OK;
    if (!valueValid(headers.endEntry())) return fail(s, 400, "invalid_header_value");
    return HPE_OK;
  }

  // ---- requests ----
  static RequestDecoder& req(llhttp_t* p) { return *static_cast<RequestDecoder*>(p->data); }

  static int reqMessageBegin(llhttp_t* p) {
    RequestDecoder& d = req(p);
    d.in_message_ = true;
    d.head_complete_ = false;
    d.body_bytes_ = 0;
    d.head_.clear();
    return HPE_OK;
  }
  static int reqMethod(llhttp_t* p, const char* at, size_t len) {
    req(p).head_.method.append(at, len);
    return HPE_OK;
  }
  static int reqUrl(llhttp_t* p, const char* at, size_t len) {
    req(p).head_.target.append(at, len);
    return HPE_OK;
  }
  static int reqField(llhttp_t* p, const char* at, size_t len) {
    RequestDecoder& d = req(p);
    return onHeaderField(p, at, len, d.head_.headers, d.head_complete_);
  }
  static int reqValue(llhttp_t* p, const char* at, size_t len) {
    RequestDecoder& d = req(p);
    return onHeaderValue(p, at, len, d.head_.headers, d.head_complete_);
  }
  static int reqValueComplete(llhttp_t* p) {
    RequestDecoder& d = req(p);
    return headerDone(st(p), d.head_.headers, d.head_complete_);
  }

  static int reqHeadersComplete(llhttp_t* p) {
    RequestDecoder& d = req(p);
    Http1ParserState& s = st(p);
    RequestHead& h = d.head_;
    h.version_major = p->http_major;
    h.version_minor = p->http_minor;
    if (h.version_major != 1) return fail(s, 505, "unsupported_version");
    if (p->method == HTTP_CONNECT) return fail(s, 405, "connect_not_supported");

    size_t hosts = h.headers.count("host");
    if (hosts > 1) return fail(s, 400, "duplicate_host");

    // Absolute form: "http://host[:port]/path" → Host from the URI, origin-form target.
    std::string_view t = h.target;
    if (!t.empty() && t[0] != '/' && t != "*") {
      size_t scheme_end = t.find("://");
      if (scheme_end == std::string_view::npos) return fail(s, 400, "invalid_target");
      std::string_view scheme = t.substr(0, scheme_end);
      if (!iequals(scheme, "http") && !iequals(scheme, "https")) {
        return fail(s, 400, "invalid_target");
      }
      std::string_view rest = t.substr(scheme_end + 3);
      size_t slash = rest.find_first_of("/?");
      std::string_view authority = rest.substr(0, slash);
      if (authority.empty() || authority.find('@') != std::string_view::npos) {
        return fail(s, 400, "invalid_target");
      }
      std::string path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
      if (path[0] == '?') path.insert(0, "/");
      h.headers.set("Host", authority);
      h.target = std::move(path);
    } else if (hosts == 0 && h.version_minor >= 1) {
      return fail(s, 400, "missing_host");
    }

    bool has_te = h.headers.has("transfer-encoding");
    if (has_te && h.version_minor == 0) return fail(s, 400, "transfer_encoding_http10");
    h.chunked = (p->flags & F_CHUNKED) != 0;
    if (has_te && !h.chunked) return fail(s, 400, "invalid_transfer_encoding");
    h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    h.content_length = h.has_content_length ? p->content_length : 0;
    h.keep_alive = llhttp_should_keep_alive(p) != 0;
    // Only a GET may switch protocols (WebSocket; RFC 9110 §7.8 leaves the method open, but a
    // HEAD answered 101 would make the tunnel's bytes parse as a second response). Any other
    // method is an ordinary request: Upgrade is dropped as hop-by-hop and a 101 is a bad answer.
    if (p->upgrade != 0 && p->method != HTTP_GET) p->upgrade = 0;
    h.upgrade = p->upgrade != 0;
    std::string_view expect = h.headers.get("expect");
    if (!expect.empty()) {
      if (!iequals(trimOws(expect), "100-continue")) return fail(s, 417, "unsupported_expect");
      h.expect_continue = h.version_minor >= 1;
    }
    // Refused from the head alone: no 100 Continue goes out and no byte of it reaches a backend.
    if (d.limits_.max_body_bytes != 0 && h.content_length > d.limits_.max_body_bytes) {
      return fail(s, 413, "payload_too_large");
    }
    d.head_complete_ = true;
    d.cb_->onRequestHead(h);
    return HPE_OK;
  }
  static int reqBody(llhttp_t* p, const char* at, size_t len) {
    RequestDecoder& d = req(p);
    d.body_bytes_ += len;
    // Only a chunked body can get here past the limit (a Content-Length over it was refused).
    if (d.limits_.max_body_bytes != 0 && d.body_bytes_ > d.limits_.max_body_bytes) {
      return fail(st(p), 413, "payload_too_large");
    }
    d.cb_->onRequestBody(at, len);
    return HPE_OK;
  }
  static int reqMessageComplete(llhttp_t* p) {
    RequestDecoder& d = req(p);
    d.in_message_ = false;
    d.cb_->onRequestComplete();
    // Stop here: the caller finishes this exchange before the next pipelined request is read.
    return p->upgrade ? HPE_OK : HPE_PAUSED;
  }

  // ---- responses ----
  static ResponseDecoder& rsp(llhttp_t* p) { return *static_cast<ResponseDecoder*>(p->data); }

  static int rspMessageBegin(llhttp_t* p) {
    ResponseDecoder& d = rsp(p);
    d.in_message_ = true;
    d.head_complete_ = false;
    d.head_.clear();
    return HPE_OK;
  }
  static int rspStatus(llhttp_t* p, const char* at, size_t len) {
    ResponseDecoder& d = rsp(p);
    // reason-phrase = *( HTAB / SP / VCHAR / obs-text ): no byte of it may reach a client unless
    // it could have been written by us.
    if (!valueValid(std::string_view(at, len))) return fail(st(p), 502, "invalid_reason_phrase");
    d.head_.reason.append(at, len);
    return HPE_OK;
  }
  static int rspField(llhttp_t* p, const char* at, size_t len) {
    ResponseDecoder& d = rsp(p);
    return onHeaderField(p, at, len, d.head_.headers, d.head_complete_);
  }
  static int rspValue(llhttp_t* p, const char* at, size_t len) {
    ResponseDecoder& d = rsp(p);
    return onHeaderValue(p, at, len, d.head_.headers, d.head_complete_);
  }
  static int rspValueComplete(llhttp_t* p) {
    ResponseDecoder& d = rsp(p);
    return headerDone(st(p), d.head_.headers, d.head_complete_);
  }
  static int rspHeadersComplete(llhttp_t* p) {
    ResponseDecoder& d = rsp(p);
    Http1ParserState& s = st(p);
    ResponseHead& h = d.head_;
    h.status = p->status_code;
    h.version_major = p->http_major;
    h.version_minor = p->http_minor;
    if (h.version_major != 1 || h.status < 100) return fail(s, 502, "invalid_status");
    bool has_te = h.headers.has("transfer-encoding");
    h.chunked = (p->flags & F_CHUNKED) != 0;
    h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_te && h.has_content_length) return fail(s, 502, "content_length_with_te");
    if (has_te && h.version_minor == 0) return fail(s, 502, "transfer_encoding_http10");
    h.content_length = h.has_content_length ? p->content_length : 0;
    h.keep_alive = llhttp_should_keep_alive(p) != 0;
    if (h.status >= 100 && h.status < 200 && h.status != 101) {
      // Interim responses (100, 103, any 1xx) are consumed here and never forwarded: the proxy
      // answers Expect: 100-continue itself. A 1xx never has a body, whatever its headers say:
      // bytes after its blank line are the next response.
      d.head_complete_ = false;
      return 1;
    }
    d.head_complete_ = true;
    d.cb_.onResponseHead(h);
    if (h.status == 101) return 2;                                        // tunnel follows
    if (d.head_request_ || h.status == 204 || h.status == 304) return 1;  // no body
    return HPE_OK;
  }
  static int rspBody(llhttp_t* p, const char* at, size_t len) {
    rsp(p).cb_.onResponseBody(at, len);
    return HPE_OK;
  }
  static int rspMessageComplete(llhttp_t* p) {
    ResponseDecoder& d = rsp(p);
    if (!d.head_complete_) {
      // End of an interim 1xx response: pause so run() rescans the next head from its start,
      // then goes on parsing the real response.
      st(p).interim_done = true;
      return HPE_PAUSED;
    }
    d.in_message_ = false;
    if (d.head_.status == 101) return HPE_OK;  // llhttp now returns HPE_PAUSED_UPGRADE
    d.cb_.onResponseComplete();
    return HPE_PAUSED;
  }

  static const llhttp_settings_t& requestSettings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t x;
      llhttp_settings_init(&x);
      x.on_message_begin = reqMessageBegin;
      x.on_method = reqMethod;
      x.on_url = reqUrl;
      x.on_header_field = reqField;
      x.on_header_value = reqValue;
      x.on_header_value_complete = reqValueComplete;
      x.on_headers_complete = reqHeadersComplete;
      x.on_body = reqBody;
      x.on_message_complete = reqMessageComplete;
      return x;
    }();
    return s;
  }
  static const llhttp_settings_t& responseSettings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t x;
      llhttp_settings_init(&x);
      x.on_message_begin = rspMessageBegin;
      x.on_status = rspStatus;
      x.on_header_field = rspField;
      x.on_header_value = rspValue;
      x.on_header_value_complete = rspValueComplete;
      x.on_headers_complete = rspHeadersComplete;
      x.on_body = rspBody;
      x.on_message_complete = rspMessageComplete;
      return x;
    }();
    return s;
  }
};

namespace {

// What scanHead enforces besides line structure.
struct ScanLimits {
  uint32_t head;  // raw head bytes (start line, header lines, their CRLFs and the blank line)
  uint32_t uri;   // request target bytes; 0 for responses
};

// Scans a head's raw bytes ahead of llhttp, across any split: every line must end in CRLF (a bare
// LF is refused, also as the blank line that ends the head), no header line may start with SP or
// HTAB (obs-fold), the head may not exceed limits.head bytes nor the request target limits.uri.
// Returns the offset of the first offending byte, or `len`, with `why` and `status` set. Limits
// are counted here, on raw bytes, rather than per llhttp span: the verdict then depends on where
// the fault is in the byte stream, never on how the bytes were split. Header lines are skipped
// from one LF to the next with memchr; only a request line is walked byte by byte.
size_t scanHead(Http1ParserState& s, const char* data, size_t len, ScanLimits lim, const char*& why,
                int& status) {
  const auto refuse = [&](size_t at, const char* reason, int code) {
    why = reason;
    status = code;
    return at;
  };
  const auto count = [&](size_t n) {
    return (s.head_bytes += static_cast<uint32_t>(n)) > lim.head;
  };
  size_t i = 0;
  while (i < len) {
    char c = data[i];
    switch (s.scan) {
      case HeadScan::Done:
        return len;
      case HeadScan::Start:
        if (c == '\r') {
          s.scan = HeadScan::StartCr;
        } else if (c == '\n') {
          return refuse(i, "bare_lf", 400);
        } else {
          s.scan = HeadScan::InLine;
          continue;  // this byte starts the line
        }
        break;
      case HeadScan::StartCr:
        if (c != '\n') return refuse(i, "bare_cr", 400);
        s.scan = HeadScan::Start;
        break;
      case HeadScan::InLine: {
        const void* lf = memchr(data + i, '\n', len - i);
        size_t stop =
            lf == nullptr ? len : static_cast<size_t>(static_cast<const char*>(lf) - data);
        size_t end = lf == nullptr ? len : stop + 1;
        // The first byte past a limit, if this piece holds one: the target's (request line:
        // method SP target SP version; the target ends at the next SP or the LF) or the head's.
        size_t fault = len;
        const char* fault_why = nullptr;
        int fault_status = 0;
        if (s.start_line && lim.uri != 0) {
          size_t j = i;
          while (j < stop && s.spaces < 2) {
            const void* sp = memchr(data + j, ' ', stop - j);
            size_t to =
                sp == nullptr ? stop : static_cast<size_t>(static_cast<const char*>(sp) - data);
            if (s.spaces == 1) {
              if (s.uri_bytes + (to - j) > lim.uri) {
                fault = j + (lim.uri - s.uri_bytes);
                fault_why = "uri_too_long";
                fault_status = 414;
                break;
              }
              s.uri_bytes += static_cast<uint32_t>(to - j);
            }
            if (sp == nullptr) break;
            ++s.spaces;
            j = to + 1;
          }
        }
        if (s.head_bytes + (end - i) > lim.head && i + (lim.head - s.head_bytes) < fault) {
          fault = i + (lim.head - s.head_bytes);
          fault_why = "headers_too_large";
          fault_status = 431;
        }
        if (fault_why != nullptr) return refuse(fault, fault_why, fault_status);
        count(end - i);
        if (lf == nullptr) {
          s.prev_cr = data[len - 1] == '\r';
          return len;
        }
        size_t at = end - 1;
        bool cr = at > i ? data[at - 1] == '\r' : s.prev_cr;
        if (!cr) return refuse(at, "bare_lf", 400);
        s.start_line = false;
        s.scan = HeadScan::LineStart;
        i = end;
        continue;
      }
      case HeadScan::LineStart:
        if (c == ' ' || c == '\t') return refuse(i, "obs_fold", 400);
        if (c == '\n') return refuse(i, "bare_lf", 400);
        if (c != '\r') {
          s.scan = HeadScan::InLine;
          continue;
        }
        if (count(1)) return refuse(i, "headers_too_large", 431);
        s.scan = HeadScan::EndCr;
        break;
      case HeadScan::EndCr:
        if (c != '\n') return refuse(i, "bare_cr", 400);
        if (count(1)) return refuse(i, "headers_too_large", 431);
        s.scan = HeadScan::Done;
        return len;
    }
    ++i;
  }
  if (len > 0) s.prev_cr = data[len - 1] == '\r';  // an empty read carries the CR over
  return len;
}

void restartScan(Http1ParserState& s) {
  s.scan = HeadScan::Start;
  s.head_bytes = s.uri_bytes = 0;
  s.spaces = 0;
  s.start_line = true;
  s.prev_cr = false;
  s.field_bytes = 0;
}

DecodeStatus mapError(Http1ParserState& s, llhttp_errno_t err, DecodeError& error, bool request) {
  if (s.custom_reason != nullptr) {
    error.status = request ? s.custom_status : 502;
    error.reason = s.custom_reason;
  } else {
    error.status = request ? 400 : 502;
    error.reason = llhttp_errno_name(err);
  }
  return DecodeStatus::Error;
}

// Runs llhttp and maps its result. `consumed` = bytes used up to a pause or error. llhttp only
// sees bytes up to the first one the head scan refused, so whichever fault comes first in the
// byte stream decides the verdict, however the bytes were split.
DecodeStatus run(Http1ParserState& s, const char* data, size_t len, size_t& consumed,
                 DecodeError& error, bool request, ScanLimits lim) {
  size_t done = 0;
  for (;;) {
    const char* why = nullptr;
    int status = 400;
    size_t limit = len - done;
    if (s.scan != HeadScan::Done) limit = scanHead(s, data + done, len - done, lim, why, status);
    llhttp_errno_t err = llhttp_execute(&s.parser, data + done, limit);
    switch (err) {
      case HPE_OK:
        if (why != nullptr) {
          consumed = 0;
          error.status = request ? status : 502;
          error.reason = why;
          return DecodeStatus::Error;
        }
        consumed = len;
        return DecodeStatus::Ok;
      case HPE_PAUSED: {
        size_t pos = static_cast<size_t>(llhttp_get_error_pos(&s.parser) - data);
        llhttp_resume(&s.parser);
        restartScan(s);
        if (s.interim_done) {
          // A 1xx ended; the final response's head starts here and is scanned afresh.
          s.interim_done = false;
          done = pos;
          continue;
        }
        consumed = pos;
        return DecodeStatus::MessageComplete;
      }
      case HPE_PAUSED_UPGRADE:
        consumed = static_cast<size_t>(llhttp_get_error_pos(&s.parser) - data);
        return DecodeStatus::Upgrade;
      default:
        consumed = 0;
        return mapError(s, err, error, request);
    }
  }
}

void resetState(Http1ParserState& s, llhttp_type_t type, const llhttp_settings_t& settings,
                void* data) {
  llhttp_init(&s.parser, type, &settings);
  s.parser.data = data;
  s.custom_reason = nullptr;
  s.custom_status = 0;
  s.interim_done = false;
  restartScan(s);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

RequestDecoder::RequestDecoder(RequestDecoderCallbacks& cb, Limits limits)
    : state_(std::make_unique<Http1ParserState>()), cb_(&cb), limits_(limits) {
  resetState(*state_, HTTP_REQUEST, Http1Trampolines::requestSettings(), this);
}

RequestDecoder::~RequestDecoder() = default;

DecodeStatus RequestDecoder::execute(const char* data, size_t len, size_t& consumed) {
  DecodeStatus st = run(*state_, data, len, consumed, error_, true,
                        {limits_.max_header_bytes, limits_.max_uri_bytes});
  if (st == DecodeStatus::Error) {
    // Refused before llhttp began a message: head() would still show the previous request
    // (perhaps another client's, decoders are pooled), which a reject must not log.
    if (!in_message_) head_.clear();
    in_message_ = false;
  }
  return st;
}

DecodeStatus RequestDecoder::finish() {
  if (!in_message_) return DecodeStatus::Ok;
  error_.status = 400;
  error_.reason = "incomplete_request";
  return DecodeStatus::Error;
}

void RequestDecoder::rebind(RequestDecoderCallbacks& cb, Limits limits) {
  cb_ = &cb;
  limits_ = limits;
  reset();
}

void RequestDecoder::reset() {
  resetState(*state_, HTTP_REQUEST, Http1Trampolines::requestSettings(), this);
  in_message_ = false;
  head_complete_ = false;
  body_bytes_ = 0;
  error_ = {};
}

ResponseDecoder::ResponseDecoder(ResponseDecoderCallbacks& cb, uint32_t max_header_bytes)
    : state_(std::make_unique<Http1ParserState>()), cb_(cb), max_header_bytes_(max_header_bytes) {
  resetState(*state_, HTTP_RESPONSE, Http1Trampolines::responseSettings(), this);
}

ResponseDecoder::~ResponseDecoder() = default;

void ResponseDecoder::expectResponseTo(std::string_view method) {
  head_request_ = method == "HEAD";
}

DecodeStatus ResponseDecoder::execute(const char* data, size_t len, size_t& consumed) {
  DecodeStatus st = run(*state_, data, len, consumed, error_, false, {max_header_bytes_, 0});
  if (st == DecodeStatus::Error) in_message_ = false;
  return st;
}

bool ResponseDecoder::bodyUntilClose() const {
  return head_complete_ && llhttp_message_needs_eof(&state_->parser) != 0;
}

DecodeStatus ResponseDecoder::finish() {
  if (!in_message_) return DecodeStatus::Ok;
  if (bodyUntilClose()) {
    llhttp_errno_t err = llhttp_finish(&state_->parser);
    if (err == HPE_OK || err == HPE_PAUSED) {
      if (in_message_) {
        in_message_ = false;
        cb_.onResponseComplete();
      }
      return DecodeStatus::MessageComplete;
    }
  }
  in_message_ = false;
  error_.status = 502;
  error_.reason = head_complete_ ? "upstream_closed_mid_body" : "upstream_closed_in_head";
  return DecodeStatus::Error;
}

void ResponseDecoder::reset() {
  resetState(*state_, HTTP_RESPONSE, Http1Trampolines::responseSettings(), this);
  in_message_ = false;
  head_complete_ = false;
  error_ = {};
}

void appendChunkHeader(std::string& out, size_t len) {
  char buf[24];
  static const char kHex[] = "0123456789abcdef";
  int i = 0;
  char tmp[20];
  do {
    tmp[i++] = kHex[len & 0xf];
    len >>= 4;
  } while (len != 0);
  int j = 0;
  while (i > 0) buf[j++] = tmp[--i];
  buf[j++] = '\r';
  buf[j++] = '\n';
  out.append(buf, static_cast<size_t>(j));
}

}  // namespace cutover
