#include "filters/request_id.h"

#include <array>

#include "policy/backoff.h"

namespace cutover {

namespace {

constexpr std::string_view kHeader = "x-request-id";
constexpr size_t kMaxIdBytes = 200;

}  // namespace

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  for (char c : id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

Filter* RequestIdFactory::createAt(void* mem) const {
  return constructFilter<RequestIdFilter>(mem);
}

FilterStatus RequestIdFilter::onRequest(FilterCallbacks& cb) {
  HeaderMap& headers = cb.request().headers;
  // Copied out before any change to the map, whose storage may move.
  std::array<char, kMaxIdBytes> id;
  size_t len = 0;
  const size_t count = headers.count(kHeader);
  const std::string_view given = headers.get(kHeader);
  if (count >= 1 && validRequestId(given)) {
    given.copy(id.data(), given.size());
    len = given.size();
    if (count > 1) headers.set(kHeader, std::string_view(id.data(), len));
  } else {
    static constexpr char kHex[] = "0123456789abcdef";
    Rng& rng = threadRng();
    for (int half = 0; half < 2; ++half) {
      uint64_t bits = rng.next();
      for (int i = 0; i < 16; ++i, bits >>= 4) id[len++] = kHex[bits & 0xf];
    }
    headers.set(kHeader, std::string_view(id.data(), len));
  }
  cb.addResponseHeader(kHeader, std::string_view(id.data(), len));
  return FilterStatus::Continue;
}

}  // namespace cutover
