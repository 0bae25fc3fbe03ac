// The request decoder must report the same events however the client's bytes are cut into reads:
// whole, at 1-3 cut points chosen by the input, and byte by byte. Between messages the decoder is
// driven as DownstreamConnection::process drives it: on MessageComplete it goes on with the rest
// of the read, or (read used up) it goes back to the pool and a reset one takes the next bytes;
// Upgrade, an error or a message that ends the connection (keep_alive false) stop the run.
#include <algorithm>
#include <cstdint>
#include <string>

#include "http/http1_codec.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/http_transcript.h"

namespace cutover::fuzz {
namespace {

struct Recorder final : RequestDecoderCallbacks {
  Transcript t;
  bool keep_alive = true;
  // Absolute checks, besides the comparison of transcripts.
  std::string_view payload;
  RequestDecoder* decoder = nullptr;
  bool exact_head_end = false;  // reads are single bytes: a head ends at the current read's end
  size_t message_start = 0;     // where the current message's bytes begin
  size_t read_end = 0;
  std::string delivered;  // the head as delivered, to tell whether it changed afterwards

  void onRequestHead(RequestHead& head) override {
    keep_alive = head.keep_alive;
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
  void onRequestBody(const char* data, size_t len) override { t.body(data, len); }
  void onRequestComplete() override {
    // The head stays valid until the next message begins and the stream may still read it:
    // trailers must not change it.
    if (describe(decoder->head()) != delivered) {
      fail(("head changed after delivery (trailers merged?): now\n" + describe(decoder->head()))
               .c_str(),
           payload);
    }
    t.line("  complete");
  }
};

std::string decode(std::string_view payload, const Reads& reads, RequestDecoder::Limits limits) {
  Recorder rec;
  RequestDecoder decoder(rec, limits);
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
      // MessageComplete.
      rec.t.line("message ends at " + std::to_string(at));
      if (used == 0) fail("MessageComplete without consuming a byte", payload);
      if (!rec.keep_alive) {
        rec.t.line("connection closes");
        return rec.t.text();
      }
      rec.message_start = at;
      if (len == 0) decoder.reset();  // back to the pool; the next read gets a fresh decoder
    } while (len > 0);
  }
  DecodeStatus st = decoder.finish();
  rec.t.line(st == DecodeStatus::Error ? "eof error " + describe(decoder.error()) : "eof ok");
  return rec.t.text();
}

}  // namespace
}  // namespace cutover::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cutover::fuzz;
  Input in;
  if (!parseInput(data, size, in)) return 0;
  cutover::RequestDecoder::Limits limits;
  if (smallLimits(in.flags)) {
    limits.max_header_bytes = 256;
    limits.max_uri_bytes = 64;
  }
  std::string whole = decode(in.payload, wholeReads(in.payload.size()), limits);
  std::string cut = decode(in.payload, cutReads(in.payload.size(), in.cuts), limits);
  if (cut != whole) {
    mismatch("request decoder", in.payload, cutsText(in.cuts), "whole", whole, "cut", cut);
  }
  std::string bytes = decode(in.payload, byteReads(in.payload.size()), limits);
  if (bytes != whole) {
    mismatch("request decoder", in.payload, "every byte", "whole", whole, "byte by byte", bytes);
  }
  return 0;
}
