// The bridge's record reader (services/bridge/bridge_wire.hpp): records split
// and joined across reads, and every way a stream can be bad.
#define BOOST_TEST_MODULE bridge_wire
#include <boost/test/unit_test.hpp>

#include <cstring>

#include "bridge_wire.hpp"
#include "duplicate_filter.hpp"

namespace {

using ipcbus::BridgeRecord;
using ipcbus::bridge::append_record;
using ipcbus::bridge::record_reader;

BridgeRecord interest(std::initializer_list<const char*> patterns) {
  BridgeRecord r;
  for (const char* p : patterns) r.mutable_interest()->add_patterns(p);
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(records_fed_byte_by_byte_come_out_whole_and_in_order) {
  std::string stream;
  append_record(interest({"a/#"}), stream);
  BridgeRecord ping;
  ping.mutable_ping();
  append_record(ping, stream);
  append_record(interest({"b/*", "c"}), stream);
  record_reader reader(4096);
  std::vector<BridgeRecord> got;
  BridgeRecord r;
  for (char c : stream) {
    BOOST_REQUIRE(reader.feed(std::string_view(&c, 1)));
    while (reader.next(r)) got.push_back(r);
  }
  BOOST_REQUIRE(got.size() == 3u);
  BOOST_TEST(got[0].interest().patterns(0) == "a/#");
  BOOST_TEST(got[1].has_ping());
  BOOST_TEST(got[2].interest().patterns_size() == 2);
  BOOST_TEST(reader.buffered() == 0u);
}

BOOST_AUTO_TEST_CASE(many_records_in_one_read_all_come_out) {
  std::string stream;
  for (int i = 0; i < 100; ++i) append_record(interest({"x"}), stream);
  record_reader reader(4096);
  BOOST_REQUIRE(reader.feed(stream));
  BridgeRecord r;
  int n = 0;
  while (reader.next(r)) ++n;
  BOOST_TEST(n == 100);
  BOOST_TEST(reader.error().empty());
}

BOOST_AUTO_TEST_CASE(a_data_record_written_directly_is_the_record_protobuf_would_write) {
  // Sizes around the varint steps of every length involved (127/128 bytes,
  // 16383/16384) and topic ids of one and two bytes, including 0 (left out).
  for (const std::uint32_t topic_id : {0u, 1u, 127u, 128u, 300000u}) {
    for (const std::size_t size : {0u, 1u, 64u, 100u, 127u, 128u, 16'300u, 16'384u, 70'000u}) {
      ipcbus::frame_header h;
      h.sequence = 1'000'000'007;
      h.publisher_id = 0x0123'4567'89ab'cdefULL;
      h.publish_time_ns = 1'700'000'000'123'456'789;
      h.origin_host = 42;
      h.hop_count = 2;
      h.payload_type = "ipcbus.test.Sample";
      const std::string payload(size, 'p');
      std::string direct = "x";  // appended after what is there
      BOOST_REQUIRE(ipcbus::bridge::append_data_record(topic_id, h, payload, direct));
      BridgeRecord expected;
      expected.mutable_data()->set_topic_id(topic_id);
      std::string frame;
      BOOST_REQUIRE(ipcbus::encode_delimited_frame(h, payload.size(), [&](char* out, std::size_t n) {
        std::memcpy(out, payload.data(), n);
        return true;
      }, frame));
      std::uint32_t length = 0;
      std::size_t prefix = 0;
      BOOST_REQUIRE(ipcbus::read_length_prefix(frame, length, prefix) == ipcbus::prefix_status::complete);
      expected.mutable_data()->set_frame(frame.substr(prefix));
      std::string via_protobuf = "x";
      append_record(expected, via_protobuf);
      BOOST_TEST((direct == via_protobuf), "topic " << topic_id << ", payload " << size);
      // And it reads back as that frame.
      record_reader reader(1 << 20);
      BOOST_REQUIRE(reader.feed(std::string_view(direct).substr(1)));
      BridgeRecord r;
      BOOST_REQUIRE(reader.next(r));
      ipcbus::frame_view v;
      BOOST_REQUIRE(!ipcbus::decode_frame(r.data().frame(), v));
      BOOST_TEST(r.data().topic_id() == topic_id);
      BOOST_TEST(v.header.sequence == h.sequence);
      BOOST_TEST(v.header.hop_count == h.hop_count);
      BOOST_TEST((v.payload == payload));
    }
  }
}

BOOST_AUTO_TEST_CASE(data_records_in_other_valid_shapes_still_read_and_broken_ones_are_errors) {
  // The frame field before the topic id, then an unknown field: valid
  // protobuf that the reader's own fast path does not take.
  const std::string frame = "\x08\x01";  // any bytes: the reader does not look inside
  std::string data;
  data += '\x12';
  data += static_cast<char>(frame.size());
  data += frame;
  data += "\x08\x07";      // topic_id 7
  data += "\x18\x05";      // field 3, unknown
  std::string body = "\x2a";
  body += static_cast<char>(data.size());
  body += data;
  std::string stream(1, static_cast<char>(body.size()));
  stream += body;
  // The fast path's shape, its frame length one byte short of the record: an
  // error (protobuf's too), not a read past the end.
  std::string bad_body = "\x2a\x05\x08\x07\x12\x03\x41\x42";
  std::string bad(1, static_cast<char>(bad_body.size()));
  bad += bad_body;
  record_reader reader(4096);
  BOOST_REQUIRE(reader.feed(stream));
  BridgeRecord r;
  BOOST_REQUIRE(reader.next(r));
  BOOST_TEST(r.data().topic_id() == 7u);
  BOOST_TEST(r.data().frame() == frame);
  BOOST_REQUIRE(reader.feed(bad));
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(!reader.error().empty());
}

BOOST_AUTO_TEST_CASE(a_length_over_the_limit_is_refused_before_its_bytes_are_kept) {
  record_reader reader(1000);
  // 1 GiB announced: refused as soon as the prefix is complete, after one small read.
  BOOST_TEST(reader.feed(std::string("\x80\x80\x80\x80\x04", 5)));
  BridgeRecord r;
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(reader.error().find("over the limit") != std::string::npos, reader.error());
  BOOST_TEST(!reader.feed(std::string(100000, 'x')));
  BOOST_TEST(reader.buffered() == 0u);
}

BOOST_AUTO_TEST_CASE(a_prefix_split_across_reads_is_still_checked_before_the_body_is_kept) {
  record_reader reader(1000);
  BOOST_TEST(reader.feed(std::string("\x80\x80", 2)));
  BridgeRecord r;
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(reader.error().empty());
  BOOST_TEST(reader.feed(std::string("\x80\x04", 2)));
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(!reader.error().empty());
}

BOOST_AUTO_TEST_CASE(a_varint_that_never_ends_is_malformed) {
  record_reader reader(1000);
  reader.feed(std::string(12, '\xff'));
  BridgeRecord r;
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(reader.error() == "malformed record length");
}

BOOST_AUTO_TEST_CASE(bytes_that_do_not_parse_are_an_error_not_a_record) {
  record_reader reader(1000);
  reader.feed(std::string("\x04\xff\xff\xff\xff", 5));
  BridgeRecord r;
  BOOST_TEST(!reader.next(r));
  BOOST_TEST(reader.error().find("does not parse") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_limit_can_grow_after_the_hello) {
  BridgeRecord big;
  big.mutable_data()->set_frame(std::string(5000, 'z'));
  std::string stream;
  append_record(big, stream);
  record_reader reader(100);
  reader.set_limit(10000);
  BOOST_REQUIRE(reader.feed(stream));
  BridgeRecord r;
  BOOST_TEST(reader.next(r));
  BOOST_TEST(r.data().frame().size() == 5000u);
}

BOOST_AUTO_TEST_CASE(a_token_proof_is_hmac_sha256_over_the_nonce_and_the_bus_id) {
  using ipcbus::bridge::auth_proof;
  using ipcbus::bridge::make_nonce;
  using ipcbus::bridge::proof_matches;
  const std::string nonce = make_nonce();
  BOOST_TEST(nonce.size() == ipcbus::bridge::nonce_size);
  BOOST_TEST(make_nonce() != nonce);
  // RFC 4231 test case 2 (key "Jefe"): the message is nonce || bus id, so a
  // 20-byte nonce plus 8 bytes of bus id gives its 28-byte message.
  const std::string message = "what do ya want for nothing?";
  std::uint64_t bus = 0;
  for (int i = 0; i < 8; ++i) bus |= std::uint64_t(static_cast<unsigned char>(message[20 + i])) << (8 * i);
  const std::string mac = auth_proof("Jefe", message.substr(0, 20), bus);
  static const unsigned char expected[32] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
                                             0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
                                             0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  BOOST_TEST(mac == std::string(reinterpret_cast<const char*>(expected), 32));
  const std::string p = auth_proof("s3cret", nonce, 7);
  BOOST_TEST(p.find("s3cret") == std::string::npos);
  BOOST_TEST(proof_matches(p, auth_proof("s3cret", nonce, 7)));
  BOOST_TEST(!proof_matches(p, auth_proof("s3cre7", nonce, 7)));
  BOOST_TEST(!proof_matches(p, auth_proof("s3cret", make_nonce(), 7)));
  BOOST_TEST(!proof_matches(p, auth_proof("s3cret", nonce, 8)));
  BOOST_TEST(!proof_matches(p, p.substr(0, 31)));
  BOOST_TEST(!proof_matches(p, ""));
  BOOST_TEST(!proof_matches("", ""));
}

BOOST_AUTO_TEST_CASE(peer_text_is_made_printable_and_bounded) {
  using ipcbus::bridge::printable;
  BOOST_TEST(printable("left@host-1") == "left@host-1");
  // Terminal escapes, line breaks, bytes that are not UTF-8, and the escape
  // character itself (so that an escape in the output is always ours).
  BOOST_TEST(printable(std::string("a\x1b[31m\nb\xff\\c", 11)) == "a\\x1b[31m\\x0ab\\xff\\x5cc");
  BOOST_TEST(printable(std::string(3, '\0')) == "\\x00\\x00\\x00");
  // Exactly the bound fits; one more is cut, with a marker, within the bound.
  BOOST_TEST(printable("abcde", 5) == "abcde");
  BOOST_TEST(printable("abcdef", 5) == "ab...");
  const std::string huge(1 << 20, '\x07');
  const std::string cut = printable(huge, 200);
  BOOST_TEST(cut.size() <= 200u);
  BOOST_TEST(cut.ends_with("..."));
  BOOST_TEST(cut.starts_with("\\x07\\x07"));
  // Never the middle of an escape before the marker.
  BOOST_TEST(printable(std::string(10, '\x01'), 9) == "\\x01...");
}

// The duplicate filter (services/bridge/duplicate_filter.hpp): each frame of an
// origin publisher passes once, in any order within the window.
BOOST_AUTO_TEST_CASE(the_duplicate_filter_passes_each_frame_once_in_any_order_within_its_window) {
  ipcbus::bridge::duplicate_filter f;
  BOOST_TEST(f.first_time(1, 7, 10));
  BOOST_TEST(!f.first_time(1, 7, 10));
  BOOST_TEST(f.first_time(1, 7, 12));  // 11 is late, not lost
  BOOST_TEST(f.first_time(1, 7, 11));
  BOOST_TEST(!f.first_time(1, 7, 11));
  BOOST_TEST(!f.first_time(1, 7, 12));
  // Another publisher, or the same publisher id from another bus, is another origin.
  BOOST_TEST(f.first_time(1, 8, 10));
  BOOST_TEST(f.first_time(2, 7, 10));
  // A jump beyond the window forgets what came before it; older than the window counts as seen.
  const auto far = 12 + ipcbus::bridge::duplicate_filter::window + 5;
  BOOST_TEST(f.first_time(1, 7, far));
  BOOST_TEST(!f.first_time(1, 7, 13));
  BOOST_TEST(f.first_time(1, 7, far - 1));
  BOOST_TEST(!f.first_time(1, 7, far - 1));
}

// With a hop limit shorter than a cycle, the copy that came the long way may
// come first: one that comes later by fewer hops is passed on (not delivered again).
BOOST_AUTO_TEST_CASE(the_duplicate_filter_passes_on_a_later_copy_that_came_by_fewer_hops) {
  using verdict = ipcbus::bridge::duplicate_filter::verdict;
  constexpr auto window = ipcbus::bridge::duplicate_filter::window;
  ipcbus::bridge::duplicate_filter f;
  BOOST_TEST((f.offer(1, 7, 10, 3) == verdict::first));  // the long way first
  BOOST_TEST((f.offer(1, 7, 10, 3) == verdict::copy));
  BOOST_TEST((f.offer(1, 7, 10, 4) == verdict::copy));
  BOOST_TEST((f.offer(1, 7, 10, 1) == verdict::fewer_hops));  // the short way
  BOOST_TEST((f.offer(1, 7, 10, 1) == verdict::copy));        // it is the fewest now
  BOOST_TEST((f.offer(1, 7, 10, 2) == verdict::copy));
  BOOST_TEST((f.offer(1, 7, 10, 0) == verdict::fewer_hops));
  // Per sequence: 11 has a count of its own.
  BOOST_TEST((f.offer(1, 7, 11, 2) == verdict::first));
  BOOST_TEST((f.offer(1, 7, 11, 2) == verdict::copy));
  // 10 + window takes 10's place as the window moves on; 11 is still in it.
  BOOST_TEST((f.offer(1, 7, 10 + window, 5) == verdict::first));
  BOOST_TEST((f.offer(1, 7, 10 + window, 4) == verdict::fewer_hops));
  BOOST_TEST((f.offer(1, 7, 10, 0) == verdict::copy));  // older than the window
  BOOST_TEST((f.offer(1, 7, 11, 1) == verdict::fewer_hops));
  BOOST_TEST((f.offer(1, 7, 12, 9) == verdict::first));  // its place was cleared for it
  // Hop counts beyond what a mark holds count as the largest it holds.
  BOOST_TEST((f.offer(1, 7, 13, 1000) == verdict::first));
  BOOST_TEST((f.offer(1, 7, 13, 300) == verdict::copy));
  BOOST_TEST((f.offer(1, 7, 13, 253) == verdict::fewer_hops));
}

BOOST_AUTO_TEST_CASE(the_duplicate_filter_tracks_a_bounded_number_of_origins_forgetting_the_oldest) {
  ipcbus::bridge::duplicate_filter f(3);
  BOOST_TEST(f.first_time(1, 1, 1));
  BOOST_TEST(f.first_time(1, 2, 1));
  BOOST_TEST(f.first_time(1, 3, 1));
  BOOST_TEST(!f.first_time(1, 1, 1));  // 1 is now the most recently seen
  BOOST_TEST(f.first_time(1, 4, 1));   // forgets 2, the least recently seen
  BOOST_TEST(f.tracked() == 3u);
  BOOST_TEST(!f.first_time(1, 1, 1));
  BOOST_TEST(f.first_time(1, 2, 1));   // forgotten: taken as new
  for (std::uint64_t p = 100; p < 10100; ++p) f.first_time(9, p, 1);
  BOOST_TEST(f.tracked() == 3u);
}

// Losses (duplicate_filter.hpp, "Losses"): a frame is counted lost exactly
// when the filter commits to refusing it, so none is both counted and delivered.
BOOST_AUTO_TEST_CASE(the_duplicate_filter_counts_a_jump_through_one_peer_as_lost_at_once_and_refuses_it_later) {
  using verdict = ipcbus::bridge::duplicate_filter::verdict;
  ipcbus::bridge::duplicate_filter f;
  std::uint64_t lost = 99;
  BOOST_TEST((f.offer(1, 7, 10, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);  // the baseline: what came before is not this bus's loss
  BOOST_TEST((f.offer(1, 7, 11, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);
  BOOST_TEST((f.offer(1, 7, 14, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 2u);  // 12 and 13
  BOOST_TEST((f.offer(1, 7, 12, 0, 5, &lost) == verdict::copy));  // given up: never delivered after all
  BOOST_TEST(lost == 0u);
  BOOST_TEST((f.offer(1, 7, 15, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);
  // A jump far beyond the window: everything skipped.
  BOOST_TEST((f.offer(1, 7, 1015, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 999u);
  // Without `lost` nothing is given up: any order within the window.
  BOOST_TEST(f.first_time(2, 7, 10));
  BOOST_TEST(f.first_time(2, 7, 12));
  BOOST_TEST(f.first_time(2, 7, 11));
}

BOOST_AUTO_TEST_CASE(the_duplicate_filter_counts_a_frame_that_two_peers_bring_as_lost_only_when_it_leaves_the_window) {
  using verdict = ipcbus::bridge::duplicate_filter::verdict;
  constexpr auto window = ipcbus::bridge::duplicate_filter::window;
  ipcbus::bridge::duplicate_filter f;
  std::uint64_t lost = 99;
  BOOST_TEST((f.offer(1, 7, 1, 1, 5, &lost) == verdict::first));
  BOOST_TEST((f.offer(1, 7, 1, 2, 6, &lost) == verdict::copy));  // a second path: 5 and 6 both bring it
  BOOST_TEST((f.offer(1, 7, 3, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);  // 2 may still come the other way
  BOOST_TEST((f.offer(1, 7, 2, 2, 6, &lost) == verdict::first));  // and does: delivered, never counted
  BOOST_TEST((f.offer(1, 7, 5, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);
  // 4 never came: counted when the window moves past it, and refused from then on.
  BOOST_TEST((f.offer(1, 7, 4 + window - 1, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 0u);
  BOOST_TEST((f.offer(1, 7, 4 + window, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 1u);
  BOOST_TEST((f.offer(1, 7, 4, 2, 6, &lost) == verdict::copy));
  // A jump far beyond the window: what will never be in it again counts now,
  // the rest of the gap (still in the window) when it leaves it.
  ipcbus::bridge::duplicate_filter g;
  for (std::uint64_t s = 1; s <= 3; ++s) {
    g.offer(1, 7, s, 1, 5, &lost);
    g.offer(1, 7, s, 2, 6, &lost);
  }
  BOOST_TEST((g.offer(1, 7, 1003, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == 1003u - 3u - window);
  BOOST_TEST((g.offer(1, 7, 1002, 2, 6, &lost) == verdict::first));  // still in the window: not lost
  BOOST_TEST((g.offer(1, 7, 1003 + window, 1, 5, &lost) == verdict::first));
  BOOST_TEST(lost == window - 2u);  // (1003 - window, 1003) but 1002, and 1003 itself came
}
