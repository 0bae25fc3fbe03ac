// The PROXY protocol parser must give the same verdict however the balancer's bytes arrive: the
// connection re-parses what it has after every read, so for each prefix the parser says NeedMore
// until it decides, and its first decision is the one it gives on the whole input. A Done header
// is also Done on exactly its own bytes, never consumes more than it was given, and names a
// source that is a valid address.
#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "net/proxy_protocol.h"

namespace {

[[noreturn]] void fail(const char* what, size_t n) {
  std::fprintf(stderr, "=== proxy header: %s (prefix %zu)\n", what, n);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cutover;
  const char* in = reinterpret_cast<const char*>(data);
  ProxyHeader whole;
  size_t whole_used = 0;
  ProxyParse verdict = parseProxyHeader(in, size, whole, whole_used);
  if (verdict == ProxyParse::Done) {
    if (whole_used == 0 || whole_used > size) fail("consumed outside the input", size);
    if (!whole.source.empty()) {
      unsigned char bin[16];
      if (inet_pton(AF_INET, whole.source.c_str(), bin) != 1 &&
          inet_pton(AF_INET6, whole.source.c_str(), bin) != 1) {
        fail("source is not an address", size);
      }
    }
  }
  // Each prefix, as a connection reading one byte at a time would see it; copied so that ASan
  // catches a read past the prefix's end.
  for (size_t n = 0; n <= size; ++n) {
    std::string prefix(in, n);
    ProxyHeader h;
    size_t used = 0;
    ProxyParse r = parseProxyHeader(prefix.data(), prefix.size(), h, used);
    if (r == ProxyParse::NeedMore) continue;
    if (r != verdict) fail("a prefix decided differently from the whole input", n);
    if (r == ProxyParse::Done &&
        (used != whole_used || h.source != whole.source || h.source_port != whole.source_port)) {
      fail("a prefix parsed a different header", n);
    }
    break;
  }
  return 0;
}
