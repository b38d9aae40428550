// Topic names are a security boundary (they become file names), so hostile
// names get their own tests and every rejection must say why.
#define BOOST_TEST_MODULE topic
#include <boost/test/unit_test.hpp>

#include <string>

#include "ipcbus/error.hpp"
#include "ipcbus/topic.hpp"

namespace {

// The reason validate_topic gives; fails the test if the topic is accepted.
std::string topic_rejection(std::string_view topic) {
  std::string why;
  const std::error_code ec = ipcbus::validate_topic(topic, &why);
  BOOST_TEST(ec == ipcbus::make_error_code(ipcbus::errc::invalid_topic));
  BOOST_TEST(!why.empty());
  return why;
}

std::string pattern_rejection(std::string_view pattern) {
  std::string why;
  const std::error_code ec = ipcbus::validate_pattern(pattern, &why);
  BOOST_TEST(ec == ipcbus::make_error_code(ipcbus::errc::invalid_topic));
  BOOST_TEST(!why.empty());
  return why;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(validation)

BOOST_AUTO_TEST_CASE(ordinary_topics_are_accepted) {
  for (const char* topic : {"sensors/imu/accel", "a", "video-0/frame_1.raw", "A/b/C9"}) {
    std::string why = "stale";
    BOOST_TEST(!ipcbus::validate_topic(topic, &why), topic);
    BOOST_TEST(why.empty());
  }
}

BOOST_AUTO_TEST_CASE(path_traversal_topic_is_rejected_with_reason) {
  BOOST_TEST(topic_rejection("../../etc/passwd") ==
             "topic '../../etc/passwd': segment '..' is not allowed");
}

BOOST_AUTO_TEST_CASE(dot_segment_is_rejected) {
  BOOST_TEST(contains(topic_rejection("a/./b"), "segment '.' is not allowed"));
}

BOOST_AUTO_TEST_CASE(absolute_path_topic_is_rejected) {
  BOOST_TEST(contains(topic_rejection("/etc/passwd"), "must not start with '/'"));
}

BOOST_AUTO_TEST_CASE(trailing_slash_is_rejected) {
  BOOST_TEST(contains(topic_rejection("a/b/"), "must not end with '/'"));
}

BOOST_AUTO_TEST_CASE(empty_segment_is_rejected) {
  BOOST_TEST(contains(topic_rejection("a//b"), "empty segment"));
}

BOOST_AUTO_TEST_CASE(empty_topic_is_rejected) {
  BOOST_TEST(contains(topic_rejection(""), "must not be empty"));
}

BOOST_AUTO_TEST_CASE(nul_inside_topic_is_rejected_and_printed_escaped) {
  const std::string topic("a/b\0c", 5);
  const std::string why = topic_rejection(topic);
  BOOST_TEST(contains(why, "NUL"));
  BOOST_TEST(contains(why, "b\\x00c"));
  BOOST_TEST(why.find('\0') == std::string::npos);
}

BOOST_AUTO_TEST_CASE(non_printable_byte_is_named_as_hex) {
  const std::string why = topic_rejection("a/b\nc");
  BOOST_TEST(contains(why, "byte '\\x0a'"));
  BOOST_TEST(why.find('\n') == std::string::npos);
}

BOOST_AUTO_TEST_CASE(disallowed_printable_byte_is_named) {
  BOOST_TEST(contains(topic_rejection("a/b c"), "byte ' ' is not allowed"));
  BOOST_TEST(contains(topic_rejection("a\\b"), "is not allowed"));
  BOOST_TEST(contains(topic_rejection("caf\xc3\xa9"), "byte '\\xc3'"));
}

BOOST_AUTO_TEST_CASE(topic_of_255_bytes_is_accepted_but_256_is_rejected) {
  BOOST_TEST(!ipcbus::validate_topic(std::string(255, 'x')));
  const std::string why = topic_rejection(std::string(256, 'x'));
  BOOST_TEST(contains(why, "256 bytes"));
  BOOST_TEST(why.size() < 200u);  // the quoted name is cut short
}

BOOST_AUTO_TEST_CASE(wildcards_are_rejected_in_topic_names) {
  BOOST_TEST(contains(topic_rejection("a/*"), "only allowed in subscription patterns"));
  BOOST_TEST(contains(topic_rejection("a/#"), "only allowed in subscription patterns"));
}

BOOST_AUTO_TEST_CASE(validation_without_reason_still_reports_error_code) {
  BOOST_TEST(ipcbus::validate_topic("..").value() ==
             static_cast<int>(ipcbus::errc::invalid_topic));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(patterns)

BOOST_AUTO_TEST_CASE(whole_segment_wildcards_are_accepted) {
  for (const char* pattern : {"a/*/c", "a/#", "#", "*", "*/*", "a/*/#", "plain/topic"}) {
    BOOST_TEST(!ipcbus::validate_pattern(pattern), pattern);
  }
}

BOOST_AUTO_TEST_CASE(star_inside_a_segment_is_rejected) {
  BOOST_TEST(contains(pattern_rejection("a/b*"), "'*' must be a whole segment"));
}

BOOST_AUTO_TEST_CASE(hash_before_the_last_segment_is_rejected) {
  BOOST_TEST(contains(pattern_rejection("a/#/c"), "only allowed as the last segment"));
  BOOST_TEST(contains(pattern_rejection("a/b#"), "'#' must be a whole segment"));
}

BOOST_AUTO_TEST_CASE(patterns_obey_the_topic_rules_too) {
  BOOST_TEST(pattern_rejection("../#") == "pattern '../#': segment '..' is not allowed");
  BOOST_TEST(contains(pattern_rejection("/#"), "must not start with '/'"));
  BOOST_TEST(contains(pattern_rejection("a//#"), "empty segment"));
}

BOOST_AUTO_TEST_CASE(literal_patterns_are_told_apart_from_wildcards) {
  BOOST_TEST(ipcbus::is_literal_pattern("a/b/c"));
  BOOST_TEST(!ipcbus::is_literal_pattern("a/*/c"));
  BOOST_TEST(!ipcbus::is_literal_pattern("a/#"));
  BOOST_TEST(!ipcbus::is_literal_pattern("#"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(matching)

BOOST_AUTO_TEST_CASE(literal_pattern_matches_only_the_same_topic) {
  BOOST_TEST(ipcbus::topic_matches("a/b", "a/b"));
  BOOST_TEST(!ipcbus::topic_matches("a/b", "a/bc"));
  BOOST_TEST(!ipcbus::topic_matches("a/b", "a/b/c"));
  BOOST_TEST(!ipcbus::topic_matches("a/b", "a"));
}

BOOST_AUTO_TEST_CASE(trailing_hash_matches_its_parent_and_any_depth_below) {
  BOOST_TEST(ipcbus::topic_matches("a/#", "a"));
  BOOST_TEST(ipcbus::topic_matches("a/#", "a/b"));
  BOOST_TEST(ipcbus::topic_matches("a/#", "a/b/c"));
  BOOST_TEST(!ipcbus::topic_matches("a/#", "ab"));
  BOOST_TEST(!ipcbus::topic_matches("a/#", "b/a"));
}

BOOST_AUTO_TEST_CASE(lone_hash_matches_everything) {
  BOOST_TEST(ipcbus::topic_matches("#", "a"));
  BOOST_TEST(ipcbus::topic_matches("#", "x/y/z"));
}

BOOST_AUTO_TEST_CASE(star_matches_exactly_one_segment) {
  BOOST_TEST(ipcbus::topic_matches("a/*/c", "a/x/c"));
  BOOST_TEST(!ipcbus::topic_matches("a/*/c", "a/c"));
  BOOST_TEST(!ipcbus::topic_matches("a/*/c", "a/x/y/c"));
  BOOST_TEST(!ipcbus::topic_matches("a/*/c", "a/x/d"));
  BOOST_TEST(!ipcbus::topic_matches("a/*", "a"));
}

BOOST_AUTO_TEST_CASE(matching_works_segment_wise_on_subscription_patterns) {
  // Config lookups pass subscription patterns where topics are expected.
  BOOST_TEST(ipcbus::topic_matches("video/#", "video/#"));
  BOOST_TEST(ipcbus::topic_matches("cmd/*", "cmd/#"));
  BOOST_TEST(!ipcbus::topic_matches("cmd/x", "cmd/*"));
}

BOOST_AUTO_TEST_CASE(hash_before_the_end_is_not_a_wildcard_when_matching) {
  // Such patterns fail validation; matching them must still not widen them.
  BOOST_TEST(!ipcbus::topic_matches("a/#/c", "a/x"));
  BOOST_TEST(!ipcbus::topic_matches("a/#/c", "a/x/c"));
}

BOOST_AUTO_TEST_SUITE_END()
