// Encoding and decoding of ipcbus.Frame (proto/ipcbus/frame.proto) by hand.
//
// The encoder writes the frame header fields and then serializes the payload
// straight into the destination buffer, so a protobuf message is serialized
// exactly once and never copied. The decoder returns views into the input
// buffer (no allocation, no copy). Both produce/accept exactly the protobuf
// wire format of ipcbus.Frame; a unit test cross-checks against the generated class.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

namespace ipcbus {

// The fields of a frame except the payload.
struct frame_header {
  std::uint64_t sequence = 0;
  std::uint64_t publisher_id = 0;
  std::int64_t publish_time_ns = 0;
  std::uint64_t origin_host = 0;
  std::uint32_t hop_count = 0;
  std::string_view payload_type;
};

// A decoded frame; the views point into the buffer that was decoded.
struct frame_view {
  frame_header header;
  std::string_view payload;
};

// Writes `size` payload bytes at `out`; returns false if serialization failed.
using payload_writer = std::function<bool(char* out, std::size_t size)>;

// Bytes of the Frame (without the length prefix) for this header and payload size.
std::size_t frame_size(const frame_header& h, std::size_t payload_size);

// Bytes of the varint32 length prefix plus the Frame.
std::size_t delimited_frame_size(const frame_header& h, std::size_t payload_size);

// Writes the length prefix and every Frame field before the payload bytes at
// `out` (which holds delimited_frame_size() bytes) and returns where the
// `payload_size` payload bytes go. Writing it again with a header of the same
// encoded size (a new publish time, say) returns the same position.
char* encode_delimited_frame_header(char* out, const frame_header& h, std::size_t payload_size);
// The same, for a caller that already knows frame_bytes = frame_size(h, payload_size)
// (the hot path computes it once per publish, for the size and for the prefix).
char* encode_delimited_frame_header(char* out, const frame_header& h, std::size_t payload_size,
                                    std::size_t frame_bytes);
// delimited_frame_size() of a Frame of `frame_bytes` bytes.
std::size_t delimited_size(std::size_t frame_bytes);

// Writes the whole delimited frame at `out` (delimited_frame_size() bytes).
// Returns false when the payload writer failed.
bool encode_delimited_frame_to(char* out, const frame_header& h, std::size_t payload_size,
                               const payload_writer& write_payload);

// Appends a varint32 length prefix and the Frame to `out`. Returns false when
// the payload writer failed (out is then restored to its previous size).
bool encode_delimited_frame(const frame_header& h, std::size_t payload_size,
                            const payload_writer& write_payload, std::string& out);

// Decodes one Frame (no length prefix). Unknown fields are skipped, as protobuf
// does. Returns errc::malformed_frame on anything that is not a valid Frame.
std::error_code decode_frame(std::string_view bytes, frame_view& out);

// Reads a varint32 length prefix at the start of `bytes`.
enum class prefix_status { complete, need_more, malformed };
prefix_status read_length_prefix(std::string_view bytes, std::uint32_t& length,
                                 std::size_t& prefix_bytes);

// ---- The local frame layout ----------------------------------------------
// Endpoints that write frames in place (publisher_endpoint::writes_in_place:
// the shm ring) keep them in memory that only processes of this host read, in
// a segment whose layout version they check. There the frame is a fixed
// header in native byte order, then the payload type name, then the payload:
// the same fields as the Frame, for a few stores and loads instead of varint
// coding (the Frame costs ~130 instructions to write and ~300 to read).
// Everything that crosses a descriptor or a host keeps the Frame.
struct local_frame_prefix {
  std::uint64_t sequence;
  std::uint64_t publisher_id;
  std::int64_t publish_time_ns;
  std::uint64_t origin_host;
  std::uint32_t hop_count;
  std::uint32_t type_size;     // bytes of the payload type name after this prefix
  std::uint64_t payload_size;  // bytes of payload after the type name: the rest of the frame
};
static_assert(sizeof(local_frame_prefix) == 48);

// Longest payload type name a local frame may carry (as the Frame overhead below allows).
inline constexpr std::size_t max_local_type_name = 1024;

// Bytes of the local frame for this header and payload size.
inline std::size_t local_frame_size(const frame_header& h, std::size_t payload_size) {
  return sizeof(local_frame_prefix) + h.payload_type.size() + payload_size;
}
// Writes the prefix and the type name at `out` (which holds local_frame_size()
// bytes) and returns where the payload goes. The size does not depend on the
// field values: writing it again (a new publish time) returns the same position.
char* encode_local_frame_header(char* out, const frame_header& h, std::size_t payload_size);
// Decodes a local frame that fills `bytes` exactly; views point into `bytes`.
// errc::malformed_frame when the sizes do not add up.
std::error_code decode_local_frame(std::string_view bytes, frame_view& out);

// Largest length prefix (5 bytes) plus the Frame header overhead for a type name.
inline constexpr std::size_t max_frame_overhead = 5 + 64 + 2 + 1024;

}  // namespace ipcbus
