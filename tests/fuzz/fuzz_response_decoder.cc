// The response decoder must report the same events however the backend's bytes are cut into
// reads: whole, at 1-3 cut points chosen by the input, and byte by byte. The request it answers is
// a GET or a HEAD (flag bit 3). After a complete response the connection is reused as
// UpstreamConnection::beginExchange does (reset, expectResponseTo) for the bytes that follow; a
// 101 or an error stops the run; at the end the backend closes (finish()).
#include <algorithm>
#include <cstdint>
#include <string>

#include "http/http1_codec.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/http_transcript.h"

namespace cutover::fuzz {
namespace {

struct Recorder final : ResponseDecoderCallbacks {
  Transcript t;
  // Absolute checks, besides the comparison of transcripts.
  std::string_view payload;
  ResponseDecoder* decoder = nullptr;
  bool exact_head_end = false;  // reads are single bytes: a head ends at the current read's end
  size_t message_start = 0;     // where the current response's bytes begin (1xx included)
  size_t read_end = 0;
  std::string delivered;  // the head as delivered, to tell whether it changed afterwards

  void onResponseHead(ResponseHead& head) override {
    delivered = describe(head);
    t.head(delivered);
    if (exact_head_end) {
      std::string_view raw = payload.substr(message_start, read_end - message_start);
      if (const char* fault = headSyntaxFault(raw)) {
        fail(("accepted a head with " + std::string(fault) + ": \"" + escape(raw) + "\"").c_str(),
             payload);
      }
    }
  }
  void onResponseBody(const char* data, size_t len) override { t.body(data, len); }
  void onResponseComplete() override {
    if (describe(decoder->head()) != delivered) {
      fail(("head changed after delivery (trailers merged?): now\n" + describe(decoder->head()))
               .c_str(),
           payload);
    }
    t.line("  complete");
  }
};

std::string decode(std::string_view payload, const Reads& reads, std::string_view method,
                   uint32_t max_header_bytes) {
  Recorder rec;
  ResponseDecoder decoder(rec, max_header_bytes);
  decoder.expectResponseTo(method);
  rec.payload = payload;
  rec.decoder = &decoder;
  rec.exact_head_end = std::all_of(reads.begin(), reads.end(),
                                   [](const auto& r) { return r.second - r.first == 1; });
  for (auto [begin, end] : reads) {
    rec.read_end = end;
    const char* p = payload.data() + begin;
    size_t len = end - begin;
    do {  // a zero-length read is fed once too
      size_t used = 0;
      DecodeStatus st = decoder.execute(p, len, used);
      if (used > len) fail("consumed more than it was given", payload);
      if (st == DecodeStatus::Error) {
        rec.t.line("error " + describe(decoder.error()));
        return rec.t.text();
      }
      p += used;
      len -= used;
      size_t at = static_cast<size_t>(p - payload.data());
      if (st == DecodeStatus::Ok) {
        if (len != 0) fail("Ok without consuming everything", payload);
        break;
      }
      if (st == DecodeStatus::Upgrade) {
        rec.t.line("upgrade at " + std::to_string(at));
        return rec.t.text();
      }
      // MessageComplete: the next exchange on this connection.
      rec.t.line("message ends at " + std::to_string(at));
      if (used == 0) fail("MessageComplete without consuming a byte", payload);
      rec.message_start = at;
      decoder.reset();
      decoder.expectResponseTo(method);
    } while (len > 0);
  }
  bool until_close = decoder.bodyUntilClose();
  DecodeStatus st = decoder.finish();
  rec.t.line(std::string("eof") + (until_close ? " (body until close)" : "") + ": " +
             (st == DecodeStatus::Error             ? "error " + describe(decoder.error())
              : st == DecodeStatus::MessageComplete ? std::string("complete")
                                                    : std::string("ok")));
  return rec.t.text();
}

}  // namespace
}  // namespace cutover::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cutover::fuzz;
  Input in;
  if (!parseInput(data, size, in)) return 0;
  std::string_view method = (in.flags & 8) ? "HEAD" : "GET";
  uint32_t max_header_bytes = smallLimits(in.flags) ? 256 : 64 * 1024;
  std::string whole = decode(in.payload, wholeReads(in.payload.size()), method, max_header_bytes);
  std::string cut =
      decode(in.payload, cutReads(in.payload.size(), in.cuts), method, max_header_bytes);
  if (cut != whole) {
    mismatch("response decoder", in.payload, cutsText(in.cuts), "whole", whole, "cut", cut);
  }
  std::string bytes = decode(in.payload, byteReads(in.payload.size()), method, max_header_bytes);
  if (bytes != whole) {
    mismatch("response decoder", in.payload, "every byte", "whole", whole, "byte by byte", bytes);
  }
  return 0;
}
