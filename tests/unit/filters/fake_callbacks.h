// A FilterCallbacks that records what a filter did, for filter unit tests.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"

namespace cutover::testing {

// A filter built by `factory` in memory of its own, destroyed with it (as a stream would).
class BuiltFilter {
 public:
  explicit BuiltFilter(const FilterFactory& factory)
      : mem_(new std::max_align_t[(factory.filterSize() + sizeof(std::max_align_t) - 1) /
                                  sizeof(std::max_align_t)]),
        filter_(factory.createAt(mem_)) {}
  ~BuiltFilter() {
    filter_->~Filter();
    delete[] mem_;
  }
  BuiltFilter(const BuiltFilter&) = delete;
  BuiltFilter& operator=(const BuiltFilter&) = delete;
  Filter* operator->() const { return filter_; }

 private:
  std::max_align_t* mem_;
  Filter* filter_;
};

class FakeCallbacks : public FilterCallbacks {
 public:
  explicit FakeCallbacks(const config::Route& route, int route_index = 0,
                         std::string client = "127.0.0.1")
      : route_(route), client_(std::move(client)) {
    info_.route = route_index;
    request_.method = "GET";
    request_.target = "/";
  }

  RequestHead& request() override { return request_; }
  const config::Route& route() const override { return route_; }
  std::string_view clientAddress() const override { return client_; }
  StreamInfo& info() override { return info_; }
  uv_loop_t* loop() override { return nullptr; }
  void localReply(int status, Reason reason, std::string_view extra_headers,
                  std::string_view body) override {
    ++replies;
    reply_status = status;
    reply_reason = reason;
    reply_headers = std::string(extra_headers);
    reply_body = std::string(body);
  }
  void addResponseHeader(std::string_view name, std::string_view value) override {
    response_headers.emplace_back(std::string(name), std::string(value));
  }
  void resume() override { ++resumes; }

  // The value of an added response header, or "" (the first one with that name).
  std::string responseHeader(std::string_view name) const {
    for (const auto& [n, v] : response_headers) {
      if (n == name) return v;
    }
    return {};
  }

  int replies = 0;
  int reply_status = 0;
  Reason reply_reason = Reason::None;
  std::string reply_headers;
  std::string reply_body;
  std::vector<std::pair<std::string, std::string>> response_headers;
  int resumes = 0;

 private:
  const config::Route& route_;
  std::string client_;
  RequestHead request_;
  StreamInfo info_;
};

}  // namespace cutover::testing
