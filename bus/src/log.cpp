#include "ipcbus/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace ipcbus {
namespace {

log_level level_from_environment() {
  const char* v = std::getenv("IPCBUS_LOG");
  if (!v) return log_level::warn;
  if (!std::strcmp(v, "error")) return log_level::error;
  if (!std::strcmp(v, "info")) return log_level::info;
  if (!std::strcmp(v, "debug")) return log_level::debug;
  return log_level::warn;
}

std::atomic<int>& current_level() {
  static std::atomic<int> level{static_cast<int>(level_from_environment())};
  return level;
}

const char* level_name(log_level l) {
  switch (l) {
    case log_level::error: return "error";
    case log_level::warn: return "warn";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
  }
  return "?";
}

}  // namespace

void set_log_level(log_level level) { current_level().store(static_cast<int>(level)); }

bool log_enabled(log_level level) { return static_cast<int>(level) <= current_level().load(); }

void log_line(log_level level, std::string_view message) {
  if (!log_enabled(level)) return;
  static std::mutex m;
  std::string line = "ipcbus[" + std::to_string(::getpid()) + "] " + level_name(level) + ": ";
  line.append(message);
  line.push_back('\n');
  std::lock_guard lock(m);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace ipcbus
