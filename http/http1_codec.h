// Strict HTTP/1.1 decoding of requests (from clients) and responses (from backends).
//
// The only file that includes llhttp.h is http1_codec.cc. llhttp runs in strict mode and no lenient
// flag is ever set; on top of it we reject what llhttp lets through but a proxy must not forward
// (two Host headers, missing Host in HTTP/1.1, differing Content-Length values, Transfer-Encoding
// on HTTP/1.0, CL+TE together, space before the colon, oversized heads).
//
// A decoder handles one message at a time: after a message completes, execute() stops and returns
// the bytes it consumed, so the caller can finish the exchange before feeding the rest (pipelining
// keeps order by construction). Callbacks are invoked synchronously from execute(); a callback may
// not destroy the decoder (the owner defers destruction to its own close path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/http_message.h"

namespace cutover {

struct Http1ParserState;  // wraps llhttp_t; defined in http1_codec.cc

enum class DecodeStatus {
  Ok,               // all input consumed, message still in progress (or between messages)
  MessageComplete,  // a message ended; `consumed` tells where the next one begins
  Upgrade,          // head of an upgrade/CONNECT completed; the rest of the bytes are tunnel data
  Error,            // see error(); the connection must be closed after answering
};

// What went wrong, mapped to the status a client should get.
struct DecodeError {
  int status = 400;              // 400, 413, 414, 431 (for requests); 502 for responses
  std::string_view reason = "";  // static string, e.g. "invalid_header", "headers_too_large"
};

class RequestDecoderCallbacks {
 public:
  virtual ~RequestDecoderCallbacks() = default;
  // Headers complete and validated. `head` stays valid (and may be modified) until the next
  // message begins.
  virtual void onRequestHead(RequestHead& head) = 0;
  // Body bytes, chunk framing removed. Valid only during the call.
  virtual void onRequestBody(const char* data, size_t len) = 0;
  virtual void onRequestComplete() = 0;
};

class RequestDecoder {
 public:
  struct Limits {
    uint32_t max_header_bytes = 64 * 1024;
    uint32_t max_uri_bytes = 8 * 1024;
    // Request body bytes (after chunk framing is removed); 0 = unlimited. A Content-Length over
    // it is refused when the head completes, before onRequestHead; a chunked body when it grows
    // past it, before the bytes that cross it are delivered. Either way: error 413.
    uint64_t max_body_bytes = 0;
  };
  RequestDecoder(RequestDecoderCallbacks& cb, Limits limits);
  ~RequestDecoder();
  RequestDecoder(const RequestDecoder&) = delete;
  RequestDecoder& operator=(const RequestDecoder&) = delete;

  // Feeds bytes. `consumed` is set to how many bytes were used (all of them unless
  // MessageComplete/Upgrade/Error).
  DecodeStatus execute(const char* data, size_t len, size_t& consumed);
  // The peer closed: returns Error if a message was cut short.
  DecodeStatus finish();
  const DecodeError& error() const { return error_; }
  // True once a message has begun (first byte seen) and not yet completed.
  bool inMessage() const { return in_message_; }
  // True once the current message's head was delivered.
  bool headComplete() const { return head_complete_; }
  // Prepares for the next message on the same connection.
  void reset();
  // Reuse for another connection (decoders are pooled): new callbacks and limits, fresh state,
  // buffers' capacity kept.
  void rebind(RequestDecoderCallbacks& cb, Limits limits);
  RequestHead& head() { return head_; }

 private:
  friend struct Http1Trampolines;
  std::unique_ptr<Http1ParserState> state_;
  RequestDecoderCallbacks* cb_;
  Limits limits_;
  RequestHead head_;
  DecodeError error_;
  uint64_t body_bytes_ = 0;  // of the current message, delivered so far
  bool in_message_ = false;
  bool head_complete_ = false;
};

class ResponseDecoderCallbacks {
 public:
  virtual ~ResponseDecoderCallbacks() = default;
  virtual void onResponseHead(ResponseHead& head) = 0;
  virtual void onResponseBody(const char* data, size_t len) = 0;
  virtual void onResponseComplete() = 0;
};

class ResponseDecoder {
 public:
  explicit ResponseDecoder(ResponseDecoderCallbacks& cb, uint32_t max_header_bytes = 64 * 1024);
  ~ResponseDecoder();
  ResponseDecoder(const ResponseDecoder&) = delete;
  ResponseDecoder& operator=(const ResponseDecoder&) = delete;

  // Must be called before each response: a response to HEAD (or a 1xx/204/304) has no body.
  void expectResponseTo(std::string_view method);
  DecodeStatus execute(const char* data, size_t len, size_t& consumed);
  // Backend closed the connection: completes a read-until-close body, or reports truncation.
  DecodeStatus finish();
  const DecodeError& error() const { return error_; }
  bool inMessage() const { return in_message_; }
  bool headComplete() const { return head_complete_; }
  // True when the current response's body is delimited by connection close.
  bool bodyUntilClose() const;
  void reset();
  ResponseHead& head() { return head_; }

 private:
  friend struct Http1Trampolines;
  std::unique_ptr<Http1ParserState> state_;
  ResponseDecoderCallbacks& cb_;
  uint32_t max_header_bytes_;
  ResponseHead head_;
  DecodeError error_;
  bool in_message_ = false;
  bool head_complete_ = false;
  bool head_request_ = false;
};

// Chunked transfer-encoding framing for bodies we re-encode.
void appendChunkHeader(std::string& out, size_t len);  // "1a2b\r\n"
inline constexpr std::string_view kChunkEnd = "0\r\n\r\n";
inline constexpr std::string_view kCrlf = "\r\n";

}  // namespace cutover
