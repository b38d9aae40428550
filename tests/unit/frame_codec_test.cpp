// The hand-written frame codec must agree byte for byte with protobuf's
// generated ipcbus.Frame, and must refuse anything that is not a frame.
#define BOOST_TEST_MODULE frame_codec
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <random>

#include "ipcbus/frame.pb.h"
#include "ipcbus/error.hpp"
#include "ipcbus/frame_codec.hpp"

namespace {

std::string encode(const ipcbus::frame_header& h, const std::string& payload) {
  std::string out;
  BOOST_REQUIRE(ipcbus::encode_delimited_frame(h, payload.size(), [&](char* p, std::size_t n) {
    std::copy_n(payload.data(), n, p);
    return true;
  }, out));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(encoded_frame_parses_with_the_generated_class) {
  ipcbus::frame_header h;
  h.sequence = 300;
  h.publisher_id = 0xdeadbeefcafef00dull;
  h.publish_time_ns = 1'700'000'000'123'456'789;
  h.origin_host = 42;
  h.hop_count = 2;
  h.payload_type = "demo.Reading";
  const std::string payload(1000, 'x');
  const std::string bytes = encode(h, payload);
  std::uint32_t len = 0;
  std::size_t prefix = 0;
  BOOST_REQUIRE(ipcbus::read_length_prefix(bytes, len, prefix) == ipcbus::prefix_status::complete);
  BOOST_TEST(prefix + len == bytes.size());
  ipcbus::Frame f;
  BOOST_REQUIRE(f.ParseFromArray(bytes.data() + prefix, static_cast<int>(len)));
  BOOST_TEST(f.sequence() == 300u);
  BOOST_TEST(f.publisher_id() == h.publisher_id);
  BOOST_TEST(f.publish_time_ns() == h.publish_time_ns);
  BOOST_TEST(f.origin_host() == 42u);
  BOOST_TEST(f.hop_count() == 2u);
  BOOST_TEST(f.payload_type() == "demo.Reading");
  BOOST_TEST(f.payload() == payload);
  // And the generated class's bytes are exactly ours.
  BOOST_TEST(f.SerializeAsString() == bytes.substr(prefix));
}

BOOST_AUTO_TEST_CASE(generated_frame_decodes_with_the_codec) {
  ipcbus::Frame f;
  f.set_sequence(7);
  f.set_publisher_id(9);
  f.set_payload("hello");
  f.set_payload_type("x.Y");
  const std::string bytes = f.SerializeAsString();
  ipcbus::frame_view v;
  BOOST_REQUIRE(!ipcbus::decode_frame(bytes, v));
  BOOST_TEST(v.header.sequence == 7u);
  BOOST_TEST(v.header.publisher_id == 9u);
  BOOST_TEST(v.payload == "hello");
  BOOST_TEST(v.header.payload_type == "x.Y");
}

// Varints of every length from 1 to 10 bytes, read both where ten bytes remain
// in the frame (the decoder's unchecked path) and at the very end of it (the
// bounds-checked path): the values the generated class wrote come back, and
// an eleven-byte varint or one cut short is malformed.
BOOST_AUTO_TEST_CASE(varints_of_every_length_decode_like_the_generated_class) {
  std::vector<std::uint64_t> values{0, 1, 127, 128, 300, 16383, 16384, ~std::uint64_t{0}, std::uint64_t{1} << 63};
  for (int bits = 7; bits < 64; bits += 7) {
    values.push_back((std::uint64_t{1} << bits) - 1);  // the longest value of bits / 7 bytes
    values.push_back(std::uint64_t{1} << bits);        // the shortest of one byte more
  }
  values.push_back(1'700'000'000'123'456'789ull);  // a timestamp: nine bytes
  for (const std::uint64_t value : values) {
    for (const bool at_end : {false, true}) {
      ipcbus::Frame f;
      f.set_publisher_id(5);
      f.set_publish_time_ns(static_cast<std::int64_t>(value));
      if (!at_end) f.set_payload(std::string(16, 'p'));  // ten more bytes after the varint
      const std::string bytes = f.SerializeAsString();
      ipcbus::frame_view v;
      BOOST_TEST_INFO("value " << value << (at_end ? " at the end" : " inside"));
      BOOST_REQUIRE(!ipcbus::decode_frame(bytes, v));
      BOOST_TEST(static_cast<std::uint64_t>(v.header.publish_time_ns) == value);
      BOOST_TEST(v.header.publisher_id == 5u);
      BOOST_TEST(v.payload.size() == (at_end ? 0u : 16u));
    }
  }
  // Field 1 (sequence) with a varint of eleven bytes, then more bytes: malformed.
  std::string eleven("\x08");
  eleven.append(10, '\x80');
  eleven.append("\x01", 1);
  eleven.append("\x7a\x04" "abcd");
  ipcbus::frame_view v;
  BOOST_TEST(ipcbus::decode_frame(eleven, v) == ipcbus::errc::malformed_frame);
  // A nine-byte varint whose last byte is missing, inside and at the end.
  const std::string cut = std::string("\x08") + std::string(8, '\xff');
  BOOST_TEST(ipcbus::decode_frame(cut, v) == ipcbus::errc::malformed_frame);
}

BOOST_AUTO_TEST_CASE(truncated_frames_are_malformed) {
  ipcbus::frame_header h;
  h.sequence = 1;
  const std::string bytes = encode(h, "payload");
  const std::string body = bytes.substr(1);
  for (std::size_t cut = 1; cut < body.size(); ++cut) {
    ipcbus::frame_view v;
    const auto ec = ipcbus::decode_frame(std::string_view(body).substr(0, cut), v);
    // A cut inside a field is malformed; a cut exactly between fields is a valid shorter frame.
    if (ec) BOOST_TEST(ec == ipcbus::errc::malformed_frame);
  }
  ipcbus::frame_view v;
  BOOST_TEST(ipcbus::decode_frame(body.substr(0, body.size() - 1), v) == ipcbus::errc::malformed_frame);
}

BOOST_AUTO_TEST_CASE(random_garbage_never_crashes_the_decoder) {
  std::mt19937 gen(12345);
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string junk(gen() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(gen());
    ipcbus::frame_view v;
    if (ipcbus::decode_frame(junk, v)) {
      ++rejected;
    } else {  // accepted: every view must lie inside the input
      BOOST_TEST(v.payload.size() <= junk.size());
    }
  }
  BOOST_TEST(rejected > 0);
}

BOOST_AUTO_TEST_CASE(length_prefix_over_five_bytes_or_32_bits_is_malformed) {
  std::uint32_t len = 0;
  std::size_t prefix = 0;
  BOOST_TEST((ipcbus::read_length_prefix("\xff\xff\xff\xff\xff\x01", len, prefix) ==
              ipcbus::prefix_status::malformed));
  BOOST_TEST((ipcbus::read_length_prefix("\xff\xff\xff\xff\x7f", len, prefix) ==
              ipcbus::prefix_status::malformed));
  BOOST_TEST((ipcbus::read_length_prefix("\xff\xff", len, prefix) == ipcbus::prefix_status::need_more));
  BOOST_TEST((ipcbus::read_length_prefix("\x96\x01", len, prefix) == ipcbus::prefix_status::complete));
  BOOST_TEST(len == 150u);
  BOOST_TEST(prefix == 2u);
}

// The local layout (the shm ring's): every field comes back, and rewriting
// the header with another time puts the payload where it was (a loan's bytes
// are in place before its publish time is known).
BOOST_AUTO_TEST_CASE(local_frames_round_trip_and_keep_their_size) {
  ipcbus::frame_header h;
  h.sequence = 0xFFFFFFFFFFFFFFFFull;
  h.publisher_id = 0x1234567890ABCDEFull;
  h.publish_time_ns = -5;
  h.origin_host = 42;
  h.hop_count = 3;
  h.payload_type = "demo.Reading";
  const std::string payload = "the payload";
  std::string bytes(ipcbus::local_frame_size(h, payload.size()), '\0');
  BOOST_TEST(bytes.size() == sizeof(ipcbus::local_frame_prefix) + h.payload_type.size() + payload.size());
  char* at = ipcbus::encode_local_frame_header(bytes.data(), h, payload.size());
  BOOST_TEST(at == bytes.data() + bytes.size() - payload.size());
  std::copy(payload.begin(), payload.end(), at);
  ipcbus::frame_header later = h;
  later.publish_time_ns = 1'700'000'000'123'456'789;
  BOOST_TEST(ipcbus::encode_local_frame_header(bytes.data(), later, payload.size()) == at);

  ipcbus::frame_view v;
  BOOST_REQUIRE(!ipcbus::decode_local_frame(bytes, v));
  BOOST_TEST(v.header.sequence == h.sequence);
  BOOST_TEST(v.header.publisher_id == h.publisher_id);
  BOOST_TEST(v.header.publish_time_ns == later.publish_time_ns);
  BOOST_TEST(v.header.origin_host == h.origin_host);
  BOOST_TEST(v.header.hop_count == h.hop_count);
  BOOST_TEST(v.header.payload_type == h.payload_type);
  BOOST_TEST(v.payload == payload);
}

// A local frame's sizes must add up to exactly the bytes it was given (the
// record's length): short, long, or a type name past the end is malformed,
// and no view ever reaches outside the input.
BOOST_AUTO_TEST_CASE(local_frames_whose_sizes_do_not_add_up_are_malformed) {
  ipcbus::frame_header h;
  h.sequence = 7;
  h.payload_type = "t";
  std::string bytes(ipcbus::local_frame_size(h, 5), 'p');
  ipcbus::encode_local_frame_header(bytes.data(), h, 5);
  ipcbus::frame_view v;
  BOOST_REQUIRE(!ipcbus::decode_local_frame(bytes, v));
  for (std::size_t cut = 0; cut < bytes.size(); ++cut)
    BOOST_TEST(ipcbus::decode_local_frame(std::string_view(bytes).substr(0, cut), v) == ipcbus::errc::malformed_frame);
  BOOST_TEST(ipcbus::decode_local_frame(bytes + "x", v) == ipcbus::errc::malformed_frame);

  const auto with_sizes = [&](std::uint32_t type_size, std::uint64_t payload_size) {
    std::string b = bytes;
    ipcbus::local_frame_prefix p;
    std::memcpy(&p, b.data(), sizeof p);
    p.type_size = type_size;
    p.payload_size = payload_size;
    std::memcpy(b.data(), &p, sizeof p);
    return b;
  };
  const auto malformed = ipcbus::make_error_code(ipcbus::errc::malformed_frame);
  BOOST_TEST(ipcbus::decode_local_frame(with_sizes(2, 5), v) == malformed);           // one byte more than there is
  BOOST_TEST(ipcbus::decode_local_frame(with_sizes(1, 4), v) == malformed);           // one byte left over
  BOOST_TEST(ipcbus::decode_local_frame(with_sizes(7, 0), v) == malformed);           // a type name past the end
  BOOST_TEST(ipcbus::decode_local_frame(with_sizes(0xFFFFFFFFu, 5), v) == malformed);
  BOOST_TEST(ipcbus::decode_local_frame(with_sizes(1, ~std::uint64_t{0}), v) == malformed);
  // Other splits of the same bytes are frames too; their views stay inside.
  const std::string other = with_sizes(0, 6);
  BOOST_REQUIRE(!ipcbus::decode_local_frame(other, v));
  BOOST_TEST(v.header.payload_type.empty());
  BOOST_TEST(v.payload.data() + v.payload.size() == other.data() + other.size());
}
