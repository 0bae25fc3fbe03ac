// Parser cases as tables of raw bytes, each replayed whole, byte by byte and at random split
// points: the outcome must not depend on how the bytes arrive.
#include "http/http1_codec.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

using namespace cutover;

namespace {

struct Collected : RequestDecoderCallbacks {
  std::vector<RequestHead> heads;
  std::string body;
  int completes = 0;
  void onRequestHead(RequestHead& h) override { heads.push_back(h); }
  void onRequestBody(const char* d, size_t n) override { body.append(d, n); }
  void onRequestComplete() override { ++completes; }
};

struct Outcome {
  bool error = false;
  int status = 0;
  int completes = 0;
  std::string body;
  std::vector<RequestHead> heads;
};

// Feeds `input` split at `cuts`, restarting after each completed message like a connection does.
Outcome feed(const std::string& input, const std::vector<size_t>& cuts,
             RequestDecoder::Limits limits = {}) {
  Collected c;
  RequestDecoder d(c, limits);
  Outcome o;
  size_t start = 0;
  std::vector<size_t> points = cuts;
  points.push_back(input.size());
  std::string pending;
  for (size_t p : points) {
    if (p < start) continue;
    pending.append(input, start, p - start);
    start = p;
    while (!pending.empty()) {
      size_t used = 0;
      DecodeStatus s = d.execute(pending.data(), pending.size(), used);
      if (s == DecodeStatus::Error) {
        o.error = true;
        o.status = d.error().status;
        o.completes = c.completes;
        o.body = c.body;
        o.heads = c.heads;
        return o;
      }
      pending.erase(0, used);
      if (s == DecodeStatus::Ok) break;
    }
  }
  o.completes = c.completes;
  o.body = c.body;
  o.heads = c.heads;
  return o;
}

std::vector<Outcome> allWays(const std::string& input, RequestDecoder::Limits limits = {}) {
  std::vector<Outcome> out;
  out.push_back(feed(input, {}, limits));
  std::vector<size_t> every;
  for (size_t i = 1; i < input.size(); ++i) every.push_back(i);
  out.push_back(feed(input, every, limits));
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) {
    std::vector<size_t> cuts;
    std::uniform_int_distribution<size_t> dist(0, input.size());
    for (int k = 0; k < 4; ++k) cuts.push_back(dist(rng));
    std::sort(cuts.begin(), cuts.end());
    out.push_back(feed(input, cuts, limits));
  }
  return out;
}

struct RejectCase {
  const char* name;
  std::string bytes;
  int status;
};

}  // namespace

TEST_CASE("malformed or ambiguous request framing is rejected however the bytes arrive") {
  const std::vector<RejectCase> cases = {
      {"CL with TE",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       400},
      {"two different CLs",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
      {"TE not ending in chunked",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
      {"TE gzip only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"bad chunk size",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
       400},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n", 400},
      {"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
      {"bare LF in header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400},
      {"NUL in header value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 36), 400},
      {"control char in value",
       "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
       "b\r\n\r\n",
       400},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"invalid header name byte", "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", 400},
      {"missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
      {"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"bad method", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bad version", "GET / HTTP/2.7\r\nHost: a\r\n\r\n", 400},
      {"negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
      {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
      {"obs-fold after leading empty lines",
       "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400},
      {"head ended by CRLF then bare LF", "GET / HTTP/1.1\r\nHost: a\r\n\nX: not-a-body\r\n\r\n",
       400},
      {"head ended by bare LF after a header",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\nabc", 400},
      {"bare LF as a leading empty line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400},
      {"obs-fold in the second pipelined request",
       "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", 400},
  };
  for (const auto& c : cases) {
    std::string case_name = c.name;
    CAPTURE(case_name);
    for (const Outcome& o : allWays(c.bytes)) {
      CHECK(o.error);
      CHECK(o.status == c.status);
      // Only the well-formed request before a bad pipelined one completes.
      CHECK(o.completes == (case_name.find("pipelined") != std::string::npos ? 1 : 0));
    }
  }
}

TEST_CASE("a header block over the limit gets 431 and a long URI gets 414") {
  RequestDecoder::Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_uri_bytes = 100;
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n";
  for (const Outcome& o : allWays(big, limits)) CHECK(o.status == 431);
  std::string uri = "GET /" + std::string(200, 'u') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  for (const Outcome& o : allWays(uri, limits)) CHECK(o.status == 414);
}

TEST_CASE("a body over max_body_bytes gets 413: a Content-Length before the head is delivered") {
  RequestDecoder::Limits limits;
  limits.max_body_bytes = 10;
  const std::string cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ";
  for (const Outcome& o : allWays(cl + "11\r\n\r\nhello world", limits)) {
    CHECK(o.status == 413);
    CHECK(o.heads.empty());  // nothing to forward, no 100 Continue to send
    CHECK(o.body.empty());
  }
  for (const Outcome& o : allWays(cl + "10\r\n\r\nhelloworld", limits)) {
    REQUIRE_FALSE(o.error);
    CHECK(o.body == "helloworld");
  }
  // 0 = unlimited.
  for (const Outcome& o : allWays(cl + "11\r\n\r\nhello world")) CHECK_FALSE(o.error);
}

TEST_CASE("a chunked body growing past max_body_bytes gets 413 before the crossing bytes") {
  RequestDecoder::Limits limits;
  limits.max_body_bytes = 10;
  const std::string head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const Outcome& o : allWays(head + "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", limits)) {
    CHECK(o.status == 413);
    CHECK(o.heads.size() == 1);  // the head went on; the stream answers (or cuts) the exchange
    CHECK(o.completes == 0);
    CHECK(o.body.size() <= 10);
    CHECK(std::string("hello world").compare(0, o.body.size(), o.body) == 0);
  }
  // Exactly at the limit is fine, and the count starts again with each pipelined request.
  const std::string ten = head + "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
  for (const Outcome& o : allWays(ten + ten, limits)) {
    REQUIRE_FALSE(o.error);
    CHECK(o.completes == 2);
    CHECK(o.body == "helloworldhelloworld");
  }
}

TEST_CASE("valid requests parse the same however the bytes arrive") {
  std::string chunked =
      "POST /up?x=1 HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n";
  for (const Outcome& o : allWays(chunked)) {
    REQUIRE_FALSE(o.error);
    CHECK(o.completes == 1);
    CHECK(o.body == "hello world");
    REQUIRE(o.heads.size() == 1);
    CHECK(o.heads[0].chunked);
    CHECK(o.heads[0].method == "POST");
    CHECK(o.heads[0].target == "/up?x=1");
    CHECK(o.heads[0].path() == "/up");
  }
  std::string pipelined =
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: "
      "3\r\n\r\nxyz"
      "GET /c HTTP/1.0\r\n\r\n";
  for (const Outcome& o : allWays(pipelined)) {
    REQUIRE_FALSE(o.error);
    CHECK(o.completes == 3);
    REQUIRE(o.heads.size() == 3);
    CHECK(o.heads[0].target == "/a");
    CHECK(o.heads[1].content_length == 3);
    CHECK(o.heads[2].version_minor == 0);
    CHECK_FALSE(o.heads[2].keep_alive);
    CHECK(o.body == "xyz");
  }
}

TEST_CASE("header names and values arrive whole, values without surrounding whitespace") {
  std::string req = "GET / HTTP/1.1\r\nHost:  h  \r\nX-Pad: \t a b \t\r\nX-Empty:\r\nX-Long: " +
                    std::string(300, 'v') + "\r\n\r\n";
  for (const Outcome& o : allWays(req)) {
    REQUIRE_FALSE(o.error);
    REQUIRE(o.heads.size() == 1);
    const HeaderMap& h = o.heads[0].headers;
    REQUIRE(h.size() == 4);
    CHECK(h.name(1) == "X-Pad");
    CHECK(h.get("host") == "h");
    CHECK(h.get("x-pad") == "a b");
    CHECK(h.has("x-empty"));
    CHECK(h.get("x-empty").empty());
    CHECK(h.get("x-long") == std::string(300, 'v'));
  }
}

TEST_CASE("absolute-form target is rewritten to origin-form with Host from the URI") {
  for (const Outcome& o :
       allWays("GET http://backend.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")) {
    REQUIRE_FALSE(o.error);
    REQUIRE(o.heads.size() == 1);
    CHECK(o.heads[0].target == "/p?q=1");
    CHECK(o.heads[0].headers.get("host") == "backend.example:8080");
    CHECK(o.heads[0].headers.count("host") == 1);
  }
}

TEST_CASE("Expect 100-continue, upgrade and Connection close are reported in the head") {
  auto o =
      feed("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", {});
  REQUIRE(o.heads.size() == 1);
  CHECK(o.heads[0].expect_continue);
  auto u =
      feed("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", {});
  REQUIRE(u.heads.size() == 1);
  CHECK(u.heads[0].upgrade);
  auto c = feed("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", {});
  REQUIRE(c.heads.size() == 1);
  CHECK_FALSE(c.heads[0].keep_alive);
}

// ---- responses ----

namespace {
struct RspCollected : ResponseDecoderCallbacks {
  std::vector<ResponseHead> heads;
  std::string body;
  int completes = 0;
  void onResponseHead(ResponseHead& h) override { heads.push_back(h); }
  void onResponseBody(const char* d, size_t n) override { body.append(d, n); }
  void onResponseComplete() override { ++completes; }
};

struct RspOutcome {
  bool error = false;
  int completes = 0;
  std::string body;
};

RspOutcome feedResponse(const std::string& input, size_t step, bool head = false,
                        bool close_after = false) {
  RspCollected c;
  ResponseDecoder d(c);
  d.expectResponseTo(head ? "HEAD" : "GET");
  RspOutcome o;
  size_t pos = 0;
  while (pos < input.size()) {
    size_t n = std::min(step, input.size() - pos);
    size_t used = 0;
    DecodeStatus s = d.execute(input.data() + pos, n, used);
    if (s == DecodeStatus::Error) {
      o.error = true;
      return o;
    }
    pos += used;
    if (s == DecodeStatus::MessageComplete) break;
  }
  if (close_after && d.finish() == DecodeStatus::Error) o.error = true;
  o.completes = c.completes;
  o.body = c.body;
  return o;
}
}  // namespace

TEST_CASE("malformed backend responses are rejected") {
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"bad status line", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
      {"garbage", "HELLO\r\n\r\n"},
      {"NUL in header", std::string("HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n", 47)},
      {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"},
      {"two different CLs", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
      {"CL with TE",
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
      {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
      {"bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"},
  };
  for (const auto& [name, bytes] : cases) {
    std::string case_name = name;
    CAPTURE(case_name);
    for (size_t step : {bytes.size(), size_t{1}, size_t{7}}) {
      CHECK(feedResponse(bytes, step).error);
    }
  }
}

TEST_CASE("responses: chunked, HEAD without body, interim 100, read until close, truncation") {
  auto chunked =
      feedResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 1);
  CHECK_FALSE(chunked.error);
  CHECK(chunked.body == "abc");
  CHECK(chunked.completes == 1);
  auto head = feedResponse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 5, true);
  CHECK(head.completes == 1);
  CHECK(head.body.empty());
  auto interim = feedResponse(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3);
  CHECK(interim.completes == 1);
  CHECK(interim.body == "ok");
  auto eof = feedResponse("HTTP/1.1 200 OK\r\n\r\nuntil close", 4, false, true);
  CHECK_FALSE(eof.error);
  CHECK(eof.completes == 1);
  CHECK(eof.body == "until close");
  auto cut = feedResponse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 4, false, true);
  CHECK(cut.error);
  CHECK(cut.completes == 0);
}

TEST_CASE("leading empty lines before a request are skipped, however the bytes arrive") {
  for (const Outcome& o : allWays("\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n")) {
    REQUIRE_FALSE(o.error);
    REQUIRE(o.heads.size() == 1);
    CHECK(o.heads[0].target == "/a");
  }
}

TEST_CASE("chunked trailers are dropped: they never become fields of the request head") {
  std::string req =
      "POST /up HTTP/1.1\r\nHost: good\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n0\r\nContent-Length: 5\r\nHost: evil\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: good\r\n\r\n";
  for (const Outcome& o : allWays(req)) {
    REQUIRE_FALSE(o.error);
    REQUIRE(o.heads.size() == 2);
    CHECK(o.completes == 2);
    CHECK(o.body == "hello");
    CHECK(o.heads[0].headers.size() == 2);
    CHECK(o.heads[0].headers.count("host") == 1);
    CHECK(o.heads[0].headers.get("host") == "good");
    CHECK_FALSE(o.heads[0].headers.has("content-length"));
    CHECK(o.heads[1].target == "/next");
  }
  // The decoder's own head, which the stream reads when the upstream head is written late.
  Collected c;
  RequestDecoder d(c, {});
  size_t used = 0;
  REQUIRE(d.execute(req.data(), req.size(), used) == DecodeStatus::MessageComplete);
  CHECK(d.head().headers.count("host") == 1);
  CHECK_FALSE(d.head().headers.has("content-length"));
}

TEST_CASE("trailers are dropped whatever their size: they cost no memory, like the body") {
  RequestDecoder::Limits limits;
  limits.max_header_bytes = 1024;
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " +
                    std::string(2000, 't') + "\r\n\r\n";
  for (const Outcome& o : allWays(req, limits)) {
    CHECK_FALSE(o.error);
    CHECK(o.completes == 1);
    REQUIRE(o.heads.size() == 1);
    CHECK_FALSE(o.heads[0].headers.has("x-t"));
  }
}

TEST_CASE("the first fault in the byte stream decides the verdict, however the bytes are split") {
  RequestDecoder::Limits limits;
  limits.max_header_bytes = 256;
  limits.max_uri_bytes = 64;
  // The target passes its limit before llhttp would see the bad byte in it: 414.
  std::string uri = "GET /" + std::string(70, 'a') + "\x01 HTTP/1.1\r\nHost: a\r\n\r\n";
  for (const Outcome& o : allWays(uri, limits)) CHECK(o.status == 414);
  // The head passes its limit inside a long header name, before the bad byte ending it: 431.
  std::string head = "GET / HTTP/1.1\r\nHost: a\r\nX-" + std::string(300, 'n') + "(: v\r\n\r\n";
  for (const Outcome& o : allWays(head, limits)) CHECK(o.status == 431);
  // A bad byte before the limit is reached: 400, however split.
  std::string early = "GET / HTTP/1.1\r\nHost: a\r\nX-(" + std::string(300, 'n') + ": v\r\n\r\n";
  for (const Outcome& o : allWays(early, limits)) CHECK(o.status == 400);
}

TEST_CASE("Upgrade is honoured on GET only: HEAD or POST with Upgrade is an ordinary request") {
  for (const char* method : {"HEAD", "POST", "OPTIONS"}) {
    std::string m = method;
    CAPTURE(m);
    std::string req = m +
                      " /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n" +
                      "Content-Length: 0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    for (const Outcome& o : allWays(req)) {
      REQUIRE_FALSE(o.error);
      REQUIRE(o.heads.size() == 2);
      CHECK_FALSE(o.heads[0].upgrade);
      CHECK(o.heads[1].target == "/next");
    }
  }
}

TEST_CASE("an HTTP/1.0 request without Host is accepted") {
  for (const Outcome& o : allWays("GET /old HTTP/1.0\r\n\r\n")) {
    REQUIRE_FALSE(o.error);
    REQUIRE(o.heads.size() == 1);
    CHECK_FALSE(o.heads[0].headers.has("host"));
  }
}

TEST_CASE("backend responses: any 1xx has no body, reason phrases carry no control bytes") {
  std::string early =
      "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  for (size_t step : {early.size(), size_t{1}, size_t{3}, size_t{50}}) {
    RspCollected c;
    ResponseDecoder d(c);
    d.expectResponseTo("GET");
    size_t pos = 0;
    bool error = false;
    while (pos < early.size()) {
      size_t used = 0;
      DecodeStatus s = d.execute(early.data() + pos, std::min(step, early.size() - pos), used);
      if (s == DecodeStatus::Error) {
        error = true;
        break;
      }
      pos += used;
      if (s == DecodeStatus::MessageComplete) break;
    }
    CAPTURE(step);
    CHECK_FALSE(error);
    REQUIRE(c.heads.size() == 1);
    CHECK(c.heads[0].status == 200);
    CHECK_FALSE(c.heads[0].headers.has("link"));
    CHECK(c.body == "ok");
    CHECK(c.completes == 1);
  }
  // A folded line in the final response after an interim one is still refused.
  std::string fold =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n";
  for (size_t step : {fold.size(), size_t{1}, size_t{9}}) CHECK(feedResponse(fold, step).error);
  std::string ctl = "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n";
  for (size_t step : {ctl.size(), size_t{1}}) CHECK(feedResponse(ctl, step).error);
  std::string obs = "HTTP/1.1 200 D\xe9j\xe0 vu\r\nContent-Length: 0\r\n\r\n";  // obs-text is fine
  CHECK_FALSE(feedResponse(obs, obs.size()).error);
  std::string trailers =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Late: 1\r\n\r\n";
  RspCollected c;
  ResponseDecoder d(c);
  d.expectResponseTo("GET");
  size_t used = 0;
  REQUIRE(d.execute(trailers.data(), trailers.size(), used) == DecodeStatus::MessageComplete);
  CHECK_FALSE(d.head().headers.has("x-late"));
}

TEST_CASE("an empty read between CR and LF changes nothing") {
  const std::string parts[] = {"GET / HTTP/1.1\r", "", "\nHost: a\r", "", "\n\r", "", "\n"};
  Collected c;
  RequestDecoder d(c, {});
  DecodeStatus last = DecodeStatus::Ok;
  for (const std::string& p : parts) {
    size_t used = 0;
    last = d.execute(p.data(), p.size(), used);
    REQUIRE(last != DecodeStatus::Error);
  }
  CHECK(last == DecodeStatus::MessageComplete);
  REQUIRE(c.heads.size() == 1);
  CHECK(c.heads[0].headers.get("host") == "a");
}

TEST_CASE("the head limit counts a header line once, however llhttp splits it") {
  RequestDecoder::Limits limits;
  limits.max_header_bytes = 60;
  // 16 + 9 + 31 = 56 bytes of head lines: under the limit whole, byte by byte, or split.
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX-Abcdefghijklmnopqrstuv: w\r\n\r\n";
  for (const Outcome& o : allWays(req, limits)) {
    CHECK_FALSE(o.error);
    CHECK(o.completes == 1);
  }
}

TEST_CASE(
    "every control byte is refused at every position of a long value; HTAB and obs-text pass") {
  for (int c = 1; c < 0x20; ++c) {
    if (c == '\t' || c == '\r' || c == '\n') continue;
    for (size_t pos :
         {size_t{0}, size_t{3}, size_t{7}, size_t{8}, size_t{15}, size_t{16}, size_t{20}}) {
      std::string value(21, 'v');
      value[pos] = static_cast<char>(c);
      std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX: " + value + "\r\n\r\n";
      CAPTURE(c);
      CAPTURE(pos);
      Outcome o = feed(req, {});
      CHECK(o.error);
      CHECK(o.status == 400);
    }
  }
  std::string del(21, 'v');
  del[9] = '\x7f';
  CHECK(feed("GET / HTTP/1.1\r\nHost: a\r\nX: " + del + "\r\n\r\n", {}).error);
  std::string ok = "a\tb \x80\xff\xfe\t\t" + std::string(30, 'z') + "\xc3\xa9";
  Outcome o = feed("GET / HTTP/1.1\r\nHost: a\r\nX: " + ok + "\r\n\r\n", {});
  CHECK_FALSE(o.error);
  REQUIRE(o.heads.size() == 1);
  CHECK(o.heads[0].headers.get("x") == ok);
}
