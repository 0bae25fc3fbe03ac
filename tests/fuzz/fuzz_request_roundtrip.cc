// Every request head the decoder accepts is written by the proxy's HTTP/1 writer and decoded
// again. The second decode must accept it, see the same method, target and framing, and the same
// header list, apart from what the proxy drops or rewrites: hop-by-hop headers and those named in
// Connection (never Host, X-Request-Id or X-Forwarded-*), Expect (answered by the proxy), framing
// headers (re-emitted from the parsed framing), X-Forwarded-For (client appended),
// X-Forwarded-Proto (replaced) and Host (added when missing). The expectations are written out here
// independently of HopByHop, so this checks the writer against the rule, not against itself.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "http/http1_codec.h"
#include "http/http1_writer.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/http_transcript.h"

namespace cutover::fuzz {
namespace {

constexpr std::string_view kClient = "192.0.2.7";
constexpr std::string_view kDefaultHost = "default.example";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  return out;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Lower-cased tokens of every Connection header.
std::vector<std::string> connectionTokens(const HeaderMap& h) {
  std::vector<std::string> out;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i) || lower(h.name(i)) != "connection") continue;
    std::string_view v = h.value(i);
    for (;;) {
      size_t comma = v.find(',');
      std::string_view token = trim(v.substr(0, comma));
      if (!token.empty()) out.push_back(lower(token));
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  for (const std::string& x : v) {
    if (x == s) return true;
  }
  return false;
}

using Fields = std::vector<std::pair<std::string, std::string>>;

// Headers compared one to one: everything but what the writer adds or rewrites.
bool compared(const std::string& lname) {
  return lname != "host" && lname != "x-forwarded-for" && lname != "x-forwarded-proto" &&
         lname != "content-length" && lname != "transfer-encoding" && lname != "connection";
}

// What a forwarded copy of `h` must carry, in order, among the compared headers.
Fields expectedFields(const RequestHead& head) {
  const HeaderMap& h = head.headers;
  std::vector<std::string> named = connectionTokens(h);
  Fields out;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h.removed(i)) continue;
    std::string n = lower(h.name(i));
    if (!compared(n)) continue;
    if (n == "upgrade") {
      if (head.upgrade) out.emplace_back(h.name(i), h.value(i));
      continue;
    }
    if (n == "keep-alive" || n == "proxy-connection" || n == "te" || n == "trailer" ||
        n == "expect") {
      continue;
    }
    if (n != "x-request-id" && contains(named, n)) continue;
    out.emplace_back(h.name(i), h.value(i));
  }
  return out;
}

Fields actualFields(const HeaderMap& h) {
  Fields out;
  for (size_t i = 0; i < h.size(); ++i) {
    if (!h.removed(i) && compared(lower(h.name(i)))) out.emplace_back(h.name(i), h.value(i));
  }
  return out;
}

std::vector<std::string> values(const HeaderMap& h, std::string_view lname) {
  std::vector<std::string> out;
  for (size_t i = 0; i < h.size(); ++i) {
    if (!h.removed(i) && lower(h.name(i)) == lname) out.emplace_back(h.value(i));
  }
  return out;
}

std::string fieldsText(const Fields& f) {
  std::string out;
  for (const auto& [n, v] : f) out += "  \"" + escape(n) + "\": \"" + escape(v) + "\"\n";
  return out;
}

struct Second final : RequestDecoderCallbacks {
  std::vector<RequestHead> heads;
  void onRequestHead(RequestHead& head) override { heads.push_back(head); }
  void onRequestBody(const char*, size_t) override {}
  void onRequestComplete() override {}
};

[[noreturn]] void report(const char* what, std::string_view payload, const RequestHead& first,
                         const std::string& wire, const std::string& detail) {
  std::fprintf(stderr,
               "\n=== request round trip: %s ===\npayload: \"%s\"\nfirst decode:\n%swritten: "
               "\"%s\"\n%s\n",
               what, escape(payload).c_str(), describe(first).c_str(), escape(wire).c_str(),
               detail.c_str());
  std::abort();
}

void roundTrip(std::string_view payload, const RequestHead& first) {
  std::string wire;
  ForwardInfo fwd;
  fwd.client_address = kClient;
  fwd.proto = "http";
  fwd.default_host = kDefaultHost;
  writeRequestHead(wire, first, fwd);

  Second rec;
  RequestDecoder decoder(rec, RequestDecoder::Limits{});
  size_t used = 0;
  DecodeStatus st = decoder.execute(wire.data(), wire.size(), used);
  if (st == DecodeStatus::Error) {
    report("the written head does not decode", payload, first, wire,
           "error " + describe(decoder.error()));
  }
  if (rec.heads.size() != 1) report("not exactly one head decoded", payload, first, wire, "");
  if (used != wire.size()) report("bytes left after the written head", payload, first, wire, "");
  const RequestHead& again = rec.heads[0];

  std::string diff;
  if (again.method != first.method) diff += "method\n";
  if (again.target != first.target) diff += "target\n";
  if (again.version_major != 1 || again.version_minor != 1) diff += "version is not 1.1\n";
  if (again.chunked != first.chunked) diff += "chunked\n";
  if (again.has_content_length != first.has_content_length ||
      again.content_length != first.content_length) {
    diff += "content_length\n";
  }
  if (again.upgrade != first.upgrade) diff += "upgrade\n";
  if (again.expect_continue) diff += "Expect forwarded\n";

  Fields want = expectedFields(first), got = actualFields(again.headers);
  if (want != got) diff += "headers, expected:\n" + fieldsText(want) + "got:\n" + fieldsText(got);

  std::vector<std::string> host = values(first.headers, "host");
  std::vector<std::string> want_host =
      host.empty() ? std::vector<std::string>{std::string(kDefaultHost)} : host;
  if (values(again.headers, "host") != want_host) diff += "Host\n";
  std::vector<std::string> xff = values(first.headers, "x-forwarded-for");
  if (xff.empty()) {
    xff.emplace_back(kClient);
  } else {
    xff.back() += ", " + std::string(kClient);
  }
  if (values(again.headers, "x-forwarded-for") != xff) diff += "X-Forwarded-For\n";
  if (values(again.headers, "x-forwarded-proto") != std::vector<std::string>{"http"}) {
    diff += "X-Forwarded-Proto\n";
  }
  std::vector<std::string> conn = values(again.headers, "connection");
  if (first.upgrade ? conn != std::vector<std::string>{"upgrade"} : !conn.empty()) {
    diff += "Connection\n";
  }
  if (!diff.empty())
    report("the second decode differs", payload, first, wire, diff + describe(again));
}

struct First final : RequestDecoderCallbacks {
  std::string_view payload;
  bool keep_alive = true;
  void onRequestHead(RequestHead& head) override {
    keep_alive = head.keep_alive;
    roundTrip(payload, head);
  }
  void onRequestBody(const char*, size_t) override {}
  void onRequestComplete() override {}
};

}  // namespace
}  // namespace cutover::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cutover;
  using namespace cutover::fuzz;
  Input in;
  if (!parseInput(data, size, in)) return 0;  // same layout as the decoder targets; cuts unused
  First rec;
  rec.payload = in.payload;
  RequestDecoder decoder(rec, RequestDecoder::Limits{});
  const char* p = in.payload.data();
  size_t len = in.payload.size();
  // Every pipelined request, as the connection reads them.
  while (len > 0) {
    size_t used = 0;
    DecodeStatus st = decoder.execute(p, len, used);
    if (st != DecodeStatus::MessageComplete || !rec.keep_alive || used == 0) break;
    p += used;
    len -= used;
  }
  return 0;
}
