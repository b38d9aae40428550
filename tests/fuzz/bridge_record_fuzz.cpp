// Fuzz target: the bridge's record reader (services/bridge/bridge_wire.hpp)
// and, inside data records, the frame decoder, as a bridge applies them to
// what a peer sends.
//
// Input: the first byte picks the chunk size the bytes are fed in (1..256, so
// that records split across reads are covered), the rest is the stream. The
// reader has a small limit (4 KiB, as before a hello): whatever the input, it
// must never buffer more than limit + prefix + one chunk, and every record it
// hands out must re-encode to no more than the limit.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bridge_wire.hpp"
#include "fuzz_check.hpp"
#include "ipcbus/frame_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = static_cast<std::size_t>(data[0]) + 1;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr std::size_t limit = 4096;
  ipcbus::bridge::record_reader reader(limit);
  ipcbus::BridgeRecord record;
  while (!rest.empty()) {
    const std::string_view piece = rest.substr(0, chunk);
    rest.remove_prefix(piece.size());
    if (!reader.feed(piece)) {
      IPCBUS_FUZZ_CHECK(!reader.error().empty());
      return 0;
    }
    IPCBUS_FUZZ_CHECK(reader.buffered() <= limit + 5 + chunk);
    while (reader.next(record)) {
      IPCBUS_FUZZ_CHECK(record.ByteSizeLong() <= limit);
      if (record.has_data()) {
        ipcbus::frame_view f;
        if (!ipcbus::decode_frame(record.data().frame(), f)) {
          const std::string_view whole = record.data().frame();
          IPCBUS_FUZZ_CHECK(f.payload.empty() ||
                            (f.payload.data() >= whole.data() && f.payload.data() + f.payload.size() <= whole.data() + whole.size()));
        }
      }
      std::string again;
      ipcbus::bridge::append_record(record, again);
      IPCBUS_FUZZ_CHECK(!again.empty());
    }
    if (!reader.error().empty()) return 0;
  }
  return 0;
}
