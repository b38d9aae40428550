// publisher_endpoint's default write_frame, which a transport that writes in
// place inherits unless it does better: the reserve/write/commit sequence,
// and what happens when the writer fails or throws.
#define BOOST_TEST_MODULE endpoint
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ipcbus/error.hpp"
#include "ipcbus/transport.hpp"

namespace {

// Writes in place into a buffer of its own and records the calls it gets.
class buffer_endpoint final : public ipcbus::publisher_endpoint {
 public:
  std::error_code reserve_error;
  bool drop = false;
  std::vector<std::string> calls;
  std::string committed;

  std::string uri() const override { return "test://buffer"; }
  std::error_code send(const ipcbus::frame_ptr&) override { return {}; }
  std::size_t subscriber_count() const override { return 1; }
  bool flush(std::chrono::milliseconds) override { return true; }
  ipcbus::endpoint_counters counters() const override { return {}; }
  void close() override {}
  bool writes_in_place() const override { return true; }
  std::error_code reserve(std::size_t size, std::uint64_t sequence, ipcbus::frame_slot& out) override {
    calls.push_back("reserve " + std::to_string(size) + " " + std::to_string(sequence) +
                    (out.brief ? " brief" : ""));
    out = ipcbus::frame_slot{};
    if (reserve_error) return reserve_error;
    if (drop) {
      out.dropped = true;
      return {};
    }
    buffer_.assign(size, '\0');
    out.data = buffer_.data();
    out.size = size;
    return {};
  }
  std::error_code commit(ipcbus::frame_slot&) override {
    calls.push_back("commit");
    committed = buffer_;
    return {};
  }
  void cancel(ipcbus::frame_slot&) override { calls.push_back("cancel"); }

 private:
  std::string buffer_;
};

using calls = std::vector<std::string>;

}  // namespace

BOOST_AUTO_TEST_CASE(write_frame_reserves_a_brief_slot_fills_it_and_commits) {
  buffer_endpoint e;
  const auto ec = e.write_frame(5, 7, [](char* out) {
    std::memcpy(out, "hello", 5);
    return true;
  });
  BOOST_TEST(!ec);
  BOOST_TEST(e.calls == (calls{"reserve 5 7 brief", "commit"}), boost::test_tools::per_element());
  BOOST_TEST(e.committed == "hello");
}

BOOST_AUTO_TEST_CASE(write_frame_cancels_when_the_writer_fails_or_throws) {
  buffer_endpoint e;
  BOOST_TEST(e.write_frame(3, 1, [](char*) { return false; }) == ipcbus::errc::invalid_argument);
  BOOST_CHECK_THROW(e.write_frame(3, 1, [](char*) -> bool { throw std::runtime_error("writer"); }),
                    std::runtime_error);
  BOOST_TEST(e.calls == (calls{"reserve 3 1 brief", "cancel", "reserve 3 1 brief", "cancel"}),
             boost::test_tools::per_element());
  BOOST_TEST(e.committed.empty());
}

BOOST_AUTO_TEST_CASE(write_frame_reports_a_drop_or_an_error_without_writing) {
  buffer_endpoint e;
  bool written = false;
  e.drop = true;
  BOOST_TEST(!e.write_frame(4, 2, [&](char*) { return written = true; }));
  e.drop = false;
  e.reserve_error = make_error_code(ipcbus::errc::timed_out);
  BOOST_TEST(e.write_frame(4, 3, [&](char*) { return written = true; }) == ipcbus::errc::timed_out);
  BOOST_TEST(!written);
  BOOST_TEST(e.committed.empty());
  BOOST_TEST(e.calls == (calls{"reserve 4 2 brief", "reserve 4 3 brief"}), boost::test_tools::per_element());
}
