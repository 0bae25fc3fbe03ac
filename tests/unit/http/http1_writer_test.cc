// The HTTP/1 writer: exact bytes of forwarded heads, and the hygiene rule that a Connection header
// cannot remove framing, Host or the forwarding headers the proxy owns.
#include "http/http1_writer.h"

#include <doctest/doctest.h>

#include <string>

#include "http/http1_codec.h"

using namespace cutover;

namespace {

struct One : RequestDecoderCallbacks {
  void onRequestHead(RequestHead&) override {}
  void onRequestBody(const char*, size_t) override {}
  void onRequestComplete() override {}
};

// Decodes one request head from `raw` and writes it as the proxy forwards it.
std::string forward(const std::string& raw, ForwardInfo fwd = {"10.0.0.9", "http", "be:80"}) {
  One cb;
  RequestDecoder d(cb, {});
  size_t used = 0;
  DecodeStatus s = d.execute(raw.data(), raw.size(), used);
  REQUIRE(
      (s == DecodeStatus::MessageComplete || s == DecodeStatus::Ok || s == DecodeStatus::Upgrade));
  std::string out;
  writeRequestHead(out, d.head(), fwd);
  return out;
}

}  // namespace

TEST_CASE("request head: framing comes from the parsed head, not the client's header lines") {
  CHECK(forward("POST /a HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: "
                "3\r\n\r\nabc") ==
        "POST /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        "Content-Length: 3\r\n\r\n");
  CHECK(forward("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: "
                "Transfer-Encoding\r\n\r\n") ==
        "POST /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        "Transfer-Encoding: chunked\r\n\r\n");
  // Equal Content-Length values folded into one line by the parser's rules come out as one.
  CHECK(forward("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab") ==
        "POST /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        "Content-Length: 2\r\n\r\n");
}

TEST_CASE("request head: Connection cannot remove Host, X-Forwarded-For or X-Request-Id") {
  CHECK(forward("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: r\r\n"
                "X-Forwarded-Proto: https\r\nConnection: host, x-forwarded-for, X-Request-Id, "
                "x-forwarded-proto\r\n\r\n") ==
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Request-Id: r\r\n"
        "X-Forwarded-Proto: http\r\n\r\n");
}

TEST_CASE("request head: every header named in Connection goes, however many are named") {
  std::string raw = "GET / HTTP/1.1\r\nHost: h\r\n";
  std::string names;
  for (int i = 0; i < 30; ++i) {
    raw += "X-H" + std::to_string(i) + ": v\r\n";
    names += (i ? ", " : "") + std::string(i % 2 ? "x-h" : "X-H") + std::to_string(i);
  }
  raw += "Connection: " + names + "\r\nX-Keep: k\r\n\r\n";
  CHECK(forward(raw) ==
        "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: k\r\nX-Forwarded-For: 10.0.0.9\r\n"
        "X-Forwarded-Proto: http\r\n\r\n");
}

TEST_CASE("request head: hop-by-hop headers go; Upgrade stays for a GET upgrade only") {
  CHECK(
      forward("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, keep-alive\r\nKeep-Alive: 5\r\n"
              "Upgrade: websocket\r\nTE: trailers\r\nProxy-Connection: x\r\nExpect: "
              "100-continue\r\n\r\n") ==
      "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.0.0.9\r\n"
      "X-Forwarded-Proto: http\r\nConnection: upgrade\r\n\r\n");
  CHECK(forward(
            "HEAD /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") ==
        "HEAD /ws HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: "
        "http\r\n\r\n");
}

TEST_CASE("request head: an HTTP/1.0 request without Host gets the backend's address") {
  CHECK(forward("GET /old HTTP/1.0\r\n\r\n") ==
        "GET /old HTTP/1.1\r\nHost: be:80\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: "
        "http\r\n\r\n");
}

TEST_CASE("response head: framing from the parsed head, Connection-named headers removed") {
  ResponseHead h;
  h.status = 200;
  h.reason = "OK";
  h.headers.add("Connection", "content-length, x-secret");
  h.headers.add("X-Secret", "s");
  h.headers.add("Content-Length", "5");
  h.headers.add("X-Kept", "k");
  h.has_content_length = true;
  h.content_length = 5;
  std::string out;
  writeResponseStart(out, h, BodyFraming::Length);
  CHECK(out == "HTTP/1.1 200 OK\r\nX-Kept: k\r\nContent-Length: 5\r\n");
  out.clear();
  writeResponseStart(out, h, BodyFraming::Chunked,
                     [](const void*, std::string_view n) { return iequals(n, "x-kept"); });
  CHECK(out == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
}

TEST_CASE("complete response: exact bytes, Content-Length from the body, close on request") {
  HeaderMap h;
  h.add("Content-Type", "text/plain");
  h.add("Allow", "POST");
  std::string out;
  writeCompleteResponse(out, 405, h, "no\n", false, false);
  CHECK(out ==
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nAllow: POST\r\n"
        "Content-Length: 3\r\n\r\nno\n");
  out.clear();
  writeCompleteResponse(out, 200, {}, "", true, false);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

TEST_CASE("complete response to HEAD: the GET answer's Content-Length and no body") {
  std::string out;
  writeCompleteResponse(out, 200, {}, "healthy-body", false, true);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
}

TEST_CASE("complete response: caller headers cannot set framing, connection management or split") {
  HeaderMap h;
  h.add("Content-Length", "999");
  h.add("Transfer-Encoding", "chunked");
  h.add("Connection", "keep-alive");
  h.add("Keep-Alive", "timeout=5");
  h.add("Upgrade", "h2c");
  h.add("X-Split", "a\r\nContent-Length: 0");  // CR LF in a value
  h.add("X-Nul", std::string_view("a\0b", 3));
  h.add("Bad Name", "x");  // not a token
  h.add("X-Ok", "fine\tvalue");
  std::string out;
  writeCompleteResponse(out, 200, h, "abc", true, false);
  CHECK(out ==
        "HTTP/1.1 200 OK\r\nX-Ok: fine\tvalue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        "abc");
}
