// Fuzz target: the frame decoder (bus/include/ipcbus/frame_codec.hpp).
//
// The input is a byte stream as a stream transport receives it: length
// prefixes and frames, one after the other. Every prefix is read with
// read_length_prefix and every frame it announces with decode_frame. A frame
// that decodes is encoded again and must decode to the same fields, and its
// views must lie inside the input. Nothing may crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "ipcbus/frame_codec.hpp"

namespace {

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool same(const ipcbus::frame_view& a, const ipcbus::frame_view& b) {
  return a.header.sequence == b.header.sequence && a.header.publisher_id == b.header.publisher_id &&
         a.header.publish_time_ns == b.header.publish_time_ns && a.header.origin_host == b.header.origin_host &&
         a.header.hop_count == b.header.hop_count && a.header.payload_type == b.header.payload_type &&
         a.payload == b.payload;
}

// A decoded frame, encoded again by the encoder, decodes to the same fields.
void check_round_trip(const ipcbus::frame_view& f) {
  std::string bytes;
  const bool ok = ipcbus::encode_delimited_frame(f.header, f.payload.size(), [&](char* out, std::size_t n) {
    f.payload.copy(out, n);
    return true;
  }, bytes);
  IPCBUS_FUZZ_CHECK(ok);
  IPCBUS_FUZZ_CHECK(bytes.size() == ipcbus::delimited_frame_size(f.header, f.payload.size()));
  std::uint32_t length = 0;
  std::size_t prefix = 0;
  IPCBUS_FUZZ_CHECK(ipcbus::read_length_prefix(bytes, length, prefix) == ipcbus::prefix_status::complete);
  IPCBUS_FUZZ_CHECK(prefix + length == bytes.size());
  ipcbus::frame_view again;
  IPCBUS_FUZZ_CHECK(!ipcbus::decode_frame(std::string_view(bytes).substr(prefix), again));
  IPCBUS_FUZZ_CHECK(same(f, again));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  // The whole input as one frame, as the shm ring and the mq transport hand it over.
  ipcbus::frame_view whole;
  if (!ipcbus::decode_frame(rest, whole)) {
    IPCBUS_FUZZ_CHECK(inside(whole.header.payload_type, rest) && inside(whole.payload, rest));
    check_round_trip(whole);
  }
  // The input as a stream of delimited frames.
  while (!rest.empty()) {
    std::uint32_t length = 0;
    std::size_t prefix = 0;
    const auto status = ipcbus::read_length_prefix(rest, length, prefix);
    if (status != ipcbus::prefix_status::complete) break;
    IPCBUS_FUZZ_CHECK(prefix >= 1 && prefix <= 5 && prefix <= rest.size());
    if (rest.size() - prefix < length) break;  // a stream would wait for more
    const std::string_view frame = rest.substr(prefix, length);
    ipcbus::frame_view f;
    if (!ipcbus::decode_frame(frame, f)) {
      IPCBUS_FUZZ_CHECK(inside(f.header.payload_type, frame) && inside(f.payload, frame));
      check_round_trip(f);
    }
    rest.remove_prefix(prefix + length);
  }
  return 0;
}
