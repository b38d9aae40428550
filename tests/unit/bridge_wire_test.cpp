// The bridge's record reader (services/bridge/bridge_wire.hpp): records split
// and joined across reads, and every way a stream can be bad.
#define BOOST_TEST_MODULE bridge_wire
#include <boost/test/unit_test.hpp>

#include "bridge_wire.hpp"

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
