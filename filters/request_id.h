// request_id: every request carries an `x-request-id` to the backend and back to the client.
//
// A client-provided id is kept when it is 1..200 printable ASCII characters (0x20..0x7e) and
// duplicates of the header are dropped; otherwise the header is replaced by 32 lower-case hex
// characters from the worker thread's PRNG. The id is added to whatever response the client gets,
// local replies included.
#pragma once

#include <memory>
#include <string_view>

#include "common/clock.h"
#include "config/config.h"
#include "filters/filter.h"
#include "policy/state_store.h"

namespace cutover {

// Whether a client-supplied request id may be forwarded as is.
bool validRequestId(std::string_view id);

class RequestIdFactory final : public FilterFactory {
 public:
  static std::unique_ptr<FilterFactory> make(const config::Config&, StateStore&, const Clock&) {
    return std::make_unique<RequestIdFactory>();
  }
  std::string_view name() const override { return "request_id"; }
  size_t filterSize() const override;
  Filter* createAt(void* mem) const override;
};

class RequestIdFilter final : public Filter {
 public:
  // Runs once the request head is complete; always returns Continue.
  FilterStatus onRequest(FilterCallbacks& cb) override;
};

inline size_t RequestIdFactory::filterSize() const { return sizeof(RequestIdFilter); }

}  // namespace cutover
