// The filter chain's interface.
//
// Phases, in the style of Pingora and Envoy, with as few outcomes as we could get away with:
//
//   onRequest   runs in chain order once the request head is complete. Returns
//                 Continue   – go on to the next filter (the last one is the router);
//                 Responded  – the filter answered with FilterCallbacks::localReply(); nothing
//                 after
//                              it runs and the filter must not touch the callbacks again;
//                 Paused     – the filter keeps the request waiting (a delay, an async check) and
//                              later calls exactly one of resume() or localReply(), from the loop
//                              thread, never from inside onRequest itself.
//   onResponse  runs in reverse order for filters whose onRequest ran, once the response head is
//               known (from a backend or a local reply), and may add or change headers.
//   onComplete  runs exactly once for every filter that was created, when the exchange is over,
//               successful or not (client gone, upstream reset, local reply): logging, metrics,
//               breaker bookkeeping. Nothing may be answered from here.
//
// A Filter is created per request by its FilterFactory; the factory is immutable, built once per
// config snapshot and shared by every worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "common/http_message.h"
#include "common/reason.h"
#include "common/stream_info.h"

typedef struct uv_loop_s uv_loop_t;

namespace cutover {

namespace config {
struct Route;
}

enum class FilterStatus { Continue, Responded, Paused };

// What a filter can see and do. Implemented by the proxy's Stream.
class FilterCallbacks {
 public:
  virtual ~FilterCallbacks() = default;
  virtual RequestHead& request() = 0;
  // The matched route; only when info().route >= 0 (a request that matched no route still runs
  // the chain, and the router answers it 404 at the end).
  virtual const config::Route& route() const = 0;
  // Client address as text without port ("127.0.0.1", "::1").
  virtual std::string_view clientAddress() const = 0;
  // The verified TLS client certificate ("subject; SAN=..."), empty without one.
  virtual std::string_view clientCertSubject() const { return {}; }
  virtual StreamInfo& info() = 0;
  virtual uv_loop_t* loop() = 0;
  // Answers the client; `reason` appears in x-cutover-reason, the access log and metrics.
  // `extra_headers` is a preformatted block of "Name: value\r\n" lines (may be empty).
  virtual void localReply(int status, Reason reason, std::string_view extra_headers = {},
                          std::string_view body = {}) = 0;
  // Adds a header to whatever response the client gets (backend or local).
  virtual void addResponseHeader(std::string_view name, std::string_view value) = 0;
  // Continue the chain after Paused. Must not be called from inside onRequest.
  virtual void resume() = 0;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual FilterStatus onRequest(FilterCallbacks& cb) = 0;
  virtual void onResponse(FilterCallbacks& /*cb*/, ResponseHead& /*head*/) {}
  virtual void onComplete(const StreamInfo& /*info*/) {}
  // Called instead of resume()/localReply() being expected when a Paused request is abandoned
  // (client closed): the filter must cancel its timers. onComplete still runs afterwards.
  virtual void onCancel() {}
};

// Builds one filter per request, in place: the stream keeps one block of memory for its filters
// and reuses it, so a request costs no allocation for its chain.
class FilterFactory {
 public:
  virtual ~FilterFactory() = default;
  virtual std::string_view name() const = 0;
  // Bytes the filter needs (its sizeof); the memory given to createAt is aligned to
  // alignof(std::max_align_t).
  virtual size_t filterSize() const = 0;
  // Constructs this factory's filter for one request in `mem`. The stream calls the filter's
  // destructor when the request ends.
  virtual Filter* createAt(void* mem) const = 0;
};

// filterSize/createAt for a filter type F built from the factory's arguments `args`.
template <class F, class... Args>
Filter* constructFilter(void* mem, Args&&... args) {
  static_assert(alignof(F) <= alignof(std::max_align_t));
  return new (mem) F(std::forward<Args>(args)...);
}

}  // namespace cutover
