// Fuzz target: the YAML configuration parser (bus/src/config.cpp).
//
// The input is the text of a configuration file. parse_config must either
// return a configuration or report errc::config_error with a message naming
// the source; no other exception may escape and nothing may crash. What it
// accepts must be usable: every rule's pattern is a valid pattern, and
// settings_for() answers for it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "ipcbus/config.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/topic.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  std::error_code ec;
  std::string message;
  const auto cfg = ipcbus::parse_config(yaml, "fuzz.yaml", ec, message);
  if (!cfg) {
    IPCBUS_FUZZ_CHECK(ec == ipcbus::errc::config_error);
    IPCBUS_FUZZ_CHECK(message.starts_with("fuzz.yaml"));
    return 0;
  }
  IPCBUS_FUZZ_CHECK(!ec && message.empty());
  for (const auto& rule : cfg->topics) {
    IPCBUS_FUZZ_CHECK(!ipcbus::validate_pattern(rule.match));
    (void)cfg->settings_for(rule.match);
  }
  (void)cfg->settings_for("fuzz/topic");
  return 0;
}
