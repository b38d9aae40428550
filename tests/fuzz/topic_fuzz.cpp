// Fuzz target: topic names and subscription patterns (bus/src/topic.cpp).
//
// The input is split at its first '\n' into a pattern and a topic (no '\n':
// the whole input is both). Besides not crashing, the rules of topic.hpp must
// hold for whatever is accepted: a valid topic is a valid pattern, it matches
// itself and '#', it is at most 255 bytes of [A-Za-z0-9_.-/] without empty,
// "." or ".." segments; a literal pattern matches exactly the equal topic.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "ipcbus/topic.hpp"

namespace {

bool allowed_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

// The rules of a valid topic, restated independently of topic.cpp.
void check_valid_topic(std::string_view topic) {
  IPCBUS_FUZZ_CHECK(!topic.empty() && topic.size() <= ipcbus::max_topic_length);
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = topic.find('/', start);
    const std::string_view seg = topic.substr(start, slash == std::string_view::npos ? slash : slash - start);
    IPCBUS_FUZZ_CHECK(!seg.empty() && seg != "." && seg != "..");
    for (char c : seg) IPCBUS_FUZZ_CHECK(allowed_char(c));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
}

void check_one(std::string_view text) {
  std::string why;
  const bool topic_ok = !ipcbus::validate_topic(text, &why);
  IPCBUS_FUZZ_CHECK(topic_ok == why.empty());
  why.clear();
  const bool pattern_ok = !ipcbus::validate_pattern(text, &why);
  IPCBUS_FUZZ_CHECK(pattern_ok == why.empty());
  if (topic_ok) {
    check_valid_topic(text);
    IPCBUS_FUZZ_CHECK(pattern_ok);
    IPCBUS_FUZZ_CHECK(ipcbus::is_literal_pattern(text));
    IPCBUS_FUZZ_CHECK(ipcbus::topic_matches(text, text));
    IPCBUS_FUZZ_CHECK(ipcbus::topic_matches("#", text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nl = input.find('\n');
  const std::string_view pattern = input.substr(0, nl);
  const std::string_view topic = nl == std::string_view::npos ? input : input.substr(nl + 1);
  check_one(pattern);
  if (nl != std::string_view::npos) check_one(topic);
  if (!ipcbus::validate_pattern(pattern) && !ipcbus::validate_topic(topic)) {
    const bool matches = ipcbus::topic_matches(pattern, topic);
    if (ipcbus::is_literal_pattern(pattern)) IPCBUS_FUZZ_CHECK(matches == (pattern == topic));
  }
  return 0;
}
