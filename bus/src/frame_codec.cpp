#include "ipcbus/frame_codec.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include "ipcbus/error.hpp"

namespace ipcbus {
namespace {

// Field numbers and wire types of ipcbus.Frame.
enum : std::uint32_t {
  f_sequence = 1, f_publisher_id = 2, f_publish_time = 3, f_origin_host = 4,
  f_hop_count = 5, f_payload_type = 6, f_payload = 15,
};
enum : std::uint32_t { wt_varint = 0, wt_fixed64 = 1, wt_len = 2, wt_fixed32 = 5 };

constexpr std::uint32_t tag(std::uint32_t field, std::uint32_t wire) { return (field << 3) | wire; }

std::size_t varint_size(std::uint64_t v) {
  // 7 bits per byte: (significant bits + 6) / 7, at least one byte.
  return static_cast<std::size_t>((std::bit_width(v | 1) + 6) / 7);
}

char* put_varint(char* p, std::uint64_t v) {
  while (v >= 0x80) { *p++ = static_cast<char>(v | 0x80); v >>= 7; }
  *p++ = static_cast<char>(v);
  return p;
}

char* put_fixed64(char* p, std::uint64_t v) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, 8);
    return p + 8;
  }
  for (int i = 0; i < 8; ++i) *p++ = static_cast<char>(v >> (8 * i));  // little endian on the wire
  return p;
}

// proto3 omits fields with default values; we do the same so our bytes equal
// what the generated class produces.
std::size_t header_size(const frame_header& h, std::size_t payload_size) {
  std::size_t n = 0;
  if (h.sequence) n += 1 + varint_size(h.sequence);
  if (h.publisher_id) n += 1 + 8;
  if (h.publish_time_ns) n += 1 + varint_size(static_cast<std::uint64_t>(h.publish_time_ns));
  if (h.origin_host) n += 1 + 8;
  if (h.hop_count) n += 1 + varint_size(h.hop_count);
  if (!h.payload_type.empty())
    n += 1 + varint_size(h.payload_type.size()) + h.payload_type.size();
  if (payload_size) n += 1 + varint_size(payload_size);
  return n;
}

bool get_varint_slow(const char*& p, const char* end, std::uint64_t& v) {
  const auto* q = reinterpret_cast<const unsigned char*>(p);
  const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(end - p), 10);
  std::uint64_t result = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t byte = q[i];
    result |= (byte & 0x7f) << (7 * i);
    if (byte < 0x80) {
      v = result;
      p += i + 1;
      return true;
    }
  }
  return false;  // truncated, or longer than any 64-bit varint
}

// A varint of two or more bytes with all ten a varint can take in the buffer:
// no bounds check per byte. Sequences and timestamps take this path for every
// frame (a timestamp in nanoseconds is nine bytes). (Reading eight bytes at
// once and packing their seven-bit groups was tried: more instructions for
// the lengths frames carry.)
bool get_varint_unchecked(const char*& p, std::uint64_t& v) {
  const auto* q = reinterpret_cast<const unsigned char*>(p);
  std::uint64_t result = q[0] & 0x7f;  // q[0] >= 0x80: the caller checked
#pragma GCC unroll 9
  for (int i = 1; i < 10; ++i) {
    const std::uint64_t byte = q[i];
    result |= (byte & 0x7f) << (7 * i);  // the tenth byte keeps its lowest bit, as in get_varint_slow
    if (byte < 0x80) {
      v = result;
      p += i + 1;
      return true;
    }
  }
  return false;  // longer than any 64-bit varint
}

// Field keys and most lengths take one byte: that case stays inline.
inline bool get_varint(const char*& p, const char* end, std::uint64_t& v) {
  if (p < end && static_cast<unsigned char>(*p) < 0x80) {
    v = static_cast<unsigned char>(*p++);
    return true;
  }
  if (end - p >= 10) return get_varint_unchecked(p, v);
  return get_varint_slow(p, end, v);
}

bool get_fixed64(const char*& p, const char* end, std::uint64_t& v) {
  if (end - p < 8) return false;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, 8);
    p += 8;
    return true;
  }
  v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  p += 8;
  return true;
}

bool get_bytes(const char*& p, const char* end, std::string_view& out) {
  std::uint64_t len = 0;
  if (!get_varint(p, end, len) || len > static_cast<std::uint64_t>(end - p)) return false;
  out = std::string_view(p, len);
  p += len;
  return true;
}

// Skips a field we do not know (forward compatibility, as protobuf does).
bool skip_field(const char*& p, const char* end, std::uint32_t wire) {
  std::uint64_t ignored = 0;
  std::string_view ignored_bytes;
  switch (wire) {
    case wt_varint: return get_varint(p, end, ignored);
    case wt_fixed64: return get_fixed64(p, end, ignored);
    case wt_len: return get_bytes(p, end, ignored_bytes);
    case wt_fixed32: if (end - p < 4) return false; p += 4; return true;
    default: return false;
  }
}

}  // namespace

std::size_t frame_size(const frame_header& h, std::size_t payload_size) {
  return header_size(h, payload_size) + payload_size;
}

std::size_t delimited_size(std::size_t frame_bytes) { return varint_size(frame_bytes) + frame_bytes; }

std::size_t delimited_frame_size(const frame_header& h, std::size_t payload_size) {
  return delimited_size(frame_size(h, payload_size));
}

char* encode_delimited_frame_header(char* p, const frame_header& h, std::size_t payload_size) {
  return encode_delimited_frame_header(p, h, payload_size, frame_size(h, payload_size));
}

char* encode_delimited_frame_header(char* p, const frame_header& h, std::size_t payload_size,
                                    std::size_t frame_bytes) {
  p = put_varint(p, frame_bytes);
  if (h.sequence) { p = put_varint(p, tag(f_sequence, wt_varint)); p = put_varint(p, h.sequence); }
  if (h.publisher_id) { p = put_varint(p, tag(f_publisher_id, wt_fixed64)); p = put_fixed64(p, h.publisher_id); }
  if (h.publish_time_ns) {
    p = put_varint(p, tag(f_publish_time, wt_varint));
    p = put_varint(p, static_cast<std::uint64_t>(h.publish_time_ns));
  }
  if (h.origin_host) { p = put_varint(p, tag(f_origin_host, wt_fixed64)); p = put_fixed64(p, h.origin_host); }
  if (h.hop_count) { p = put_varint(p, tag(f_hop_count, wt_varint)); p = put_varint(p, h.hop_count); }
  if (!h.payload_type.empty()) {
    p = put_varint(p, tag(f_payload_type, wt_len));
    p = put_varint(p, h.payload_type.size());
    std::memcpy(p, h.payload_type.data(), h.payload_type.size());
    p += h.payload_type.size();
  }
  if (payload_size) {
    p = put_varint(p, tag(f_payload, wt_len));
    p = put_varint(p, payload_size);
  }
  return p;
}

bool encode_delimited_frame_to(char* out, const frame_header& h, std::size_t payload_size,
                               const payload_writer& write_payload) {
  char* payload = encode_delimited_frame_header(out, h, payload_size);
  return payload_size == 0 || write_payload(payload, payload_size);
}

bool encode_delimited_frame(const frame_header& h, std::size_t payload_size,
                            const payload_writer& write_payload, std::string& out) {
  const std::size_t start = out.size();
  out.resize(start + delimited_frame_size(h, payload_size));
  if (!encode_delimited_frame_to(out.data() + start, h, payload_size, write_payload)) {
    out.resize(start);
    return false;
  }
  return true;
}

std::error_code decode_frame(std::string_view bytes, frame_view& out) {
  out = frame_view{};
  const char* p = bytes.data();
  const char* end = p + bytes.size();
  const auto bad = make_error_code(errc::malformed_frame);
  while (p < end) {
    std::uint64_t key = 0;
    if (!get_varint(p, end, key) || key > 0xffffffffu || (key >> 3) == 0) return bad;
    std::uint64_t v = 0;
    bool ok = true;
    switch (key) {
      case tag(f_sequence, wt_varint): ok = get_varint(p, end, out.header.sequence); break;
      case tag(f_publisher_id, wt_fixed64): ok = get_fixed64(p, end, out.header.publisher_id); break;
      case tag(f_publish_time, wt_varint):
        ok = get_varint(p, end, v);
        out.header.publish_time_ns = static_cast<std::int64_t>(v);
        break;
      case tag(f_origin_host, wt_fixed64): ok = get_fixed64(p, end, out.header.origin_host); break;
      case tag(f_hop_count, wt_varint):
        ok = get_varint(p, end, v) && v <= 0xffffffffu;
        out.header.hop_count = static_cast<std::uint32_t>(v);
        break;
      case tag(f_payload_type, wt_len): ok = get_bytes(p, end, out.header.payload_type); break;
      case tag(f_payload, wt_len): ok = get_bytes(p, end, out.payload); break;
      default: ok = skip_field(p, end, static_cast<std::uint32_t>(key & 7));
    }
    if (!ok) return bad;
  }
  return {};
}

char* encode_local_frame_header(char* out, const frame_header& h, std::size_t payload_size) {
  const local_frame_prefix prefix{h.sequence,  h.publisher_id, h.publish_time_ns,
                                  h.origin_host, h.hop_count,  static_cast<std::uint32_t>(h.payload_type.size()),
                                  payload_size};
  std::memcpy(out, &prefix, sizeof prefix);
  out += sizeof prefix;
  std::memcpy(out, h.payload_type.data(), h.payload_type.size());
  return out + h.payload_type.size();
}

std::error_code decode_local_frame(std::string_view bytes, frame_view& out) {
  local_frame_prefix prefix;
  if (bytes.size() < sizeof prefix) return make_error_code(errc::malformed_frame);
  std::memcpy(&prefix, bytes.data(), sizeof prefix);
  const std::size_t rest = bytes.size() - sizeof prefix;
  if (prefix.type_size > max_local_type_name || prefix.type_size > rest ||
      prefix.payload_size != rest - prefix.type_size)
    return make_error_code(errc::malformed_frame);
  out.header.sequence = prefix.sequence;
  out.header.publisher_id = prefix.publisher_id;
  out.header.publish_time_ns = prefix.publish_time_ns;
  out.header.origin_host = prefix.origin_host;
  out.header.hop_count = prefix.hop_count;
  out.header.payload_type = bytes.substr(sizeof prefix, prefix.type_size);
  out.payload = bytes.substr(sizeof prefix + prefix.type_size);
  return {};
}

prefix_status read_length_prefix(std::string_view bytes, std::uint32_t& length,
                                 std::size_t& prefix_bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 5; ++i) {
    if (i >= bytes.size()) return prefix_status::need_more;
    const auto byte = static_cast<unsigned char>(bytes[i]);
    v |= static_cast<std::uint64_t>(byte & 0x7f) << (7 * i);
    if (!(byte & 0x80)) {
      if (v > 0xffffffffu) return prefix_status::malformed;
      length = static_cast<std::uint32_t>(v);
      prefix_bytes = i + 1;
      return prefix_status::complete;
    }
  }
  return prefix_status::malformed;
}

}  // namespace ipcbus
