// A small HTTP/1.1 server for the admin API, on the main thread's loop.
//
// Each connection is the data plane's pieces: a TcpTransport (net/), the strict RequestDecoder
// (http/http1_codec.h) and the one writer (http/http1_writer.h). Each complete request goes to one
// Handler, which answers through an AdminResponder, now or later (a /reload that waits for an
// asynchronous file read). Which URL does what is the caller's business; this file only provides
// the connections and a few helpers (bearer token, 405).
//
// Per connection: keep-alive and pipelining (one request at a time, in order: the next request is
// parsed only after the previous response was written), bodies capped (413), malformed requests
// answered with the decoder's status (400/414/431, 408 when a head takes too long) and the
// connection closed after a lingering close, idle connections closed after a timeout. HEAD gets
// the headers of the GET answer without a body.
//
// Lifecycle: start() binds and listens; close(done) closes the listener and every connection and
// calls `done` from the loop once every handle's close callback has run. Keep the server alive
// until then. Responders that outlive their connection are harmless: respond() returns false.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/http_message.h"
#include "config/config.h"

namespace cutover {

struct AdminRequest {
  std::string method;  // "GET"
  std::string path;    // "/stats" (no query)
  std::string query;   // "format=json" (without '?'), empty if none
  HeaderMap headers;
  std::string body;  // at most AdminServer::Options::max_body bytes
  std::string peer;  // client address "127.0.0.1:53422"
};

class AdminConnection;
struct AdminResponderState;

// Answers one request, exactly once; copies share the same "answered" state. Use on the loop
// thread only. If every copy is dropped without answering, the client gets a 500.
class AdminResponder {
 public:
  AdminResponder() = default;
  // `extra_headers`: preformatted "Name: value\r\n" lines. Returns false (and does nothing) if this
  // request was already answered or its connection is gone.
  bool respond(int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {}) const;
  bool responded() const;

 private:
  friend class AdminConnection;
  explicit AdminResponder(std::shared_ptr<AdminResponderState> state) : state_(std::move(state)) {}
  std::shared_ptr<AdminResponderState> state_;
};

class AdminServer {
 public:
  // Runs on the loop for each complete request. The request reference is valid only during the
  // call (copy what an asynchronous answer needs); the responder may be kept and used later.
  using Handler = std::function<void(const AdminRequest&, AdminResponder)>;

  struct Options {
    size_t max_body = 1024 * 1024;
    uint32_t max_header_bytes = 16 * 1024;
    uint32_t max_uri_bytes = 8 * 1024;
    uint64_t idle_timeout_ms = 60'000;
    // First byte of a request to the end of its head (the data plane's timeouts.header_read):
    // past it the client gets 408 and the connection closes.
    uint64_t header_timeout_ms = 10'000;
    // Open connections; one accepted beyond it is closed at once. Each holds at most one request
    // (headers and max_body) and one response; while a request is answered, reading pauses once
    // more than max_body pipelined bytes wait.
    size_t max_connections = 64;
  };

  AdminServer(uv_loop_t* loop, const config::SocketAddress& address, Handler handler,
              Options options);
  AdminServer(uv_loop_t* loop, const config::SocketAddress& address, Handler handler)
      : AdminServer(loop, address, std::move(handler), Options{}) {}
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and listens (port 0 picks a free port). Returns 0 and sets `bound_address` (e.g.
  // "127.0.0.1:40123", "[::1]:40123"), or a libuv error code (no callback follows).
  int start(std::string& bound_address);
  void close(std::function<void()> done);

  size_t connections() const { return connections_.size(); }

 private:
  friend class AdminConnection;
  static void onConnection(uv_stream_t* listener, int status);
  static void onListenerClosed(uv_handle_t* handle);
  void onConnectionClosed(AdminConnection* conn);
  void maybeFinishClose();

  uv_loop_t* loop_;
  config::SocketAddress address_;
  Handler handler_;
  Options options_;
  uv_tcp_t listener_;
  // Shared by every connection's transport: bytes are consumed or copied during the read callback.
  std::unique_ptr<char[]> read_buf_;
  bool listener_open_ = false;
  bool closing_ = false;
  std::unordered_map<AdminConnection*, std::shared_ptr<AdminConnection>> connections_;
  std::function<void()> close_done_;
};

// True when no token is configured (`token` empty) or the request carries
// "Authorization: Bearer <token>" (scheme case-insensitive). The comparison takes the same time
// wherever the first difference is.
bool authorized(const AdminRequest& request, std::string_view token);

// 405 with "Allow: <allow>" and a one-line text body.
void respondMethodNotAllowed(const AdminResponder& responder, std::string_view allow = "POST");
// For mutation endpoints: returns true for POST; otherwise answers 405 (Allow: POST) and returns
// false, e.g.   if (!requirePost(req, res)) return;
bool requirePost(const AdminRequest& request, const AdminResponder& responder);

// Whether an admin address is loopback (127.0.0.0/8 or ::1): a non-loopback address without a
// token is refused at load unless admin.allow_unauthenticated (config::isLoopbackAddress).
bool isLoopback(const config::SocketAddress& address);

}  // namespace cutover
