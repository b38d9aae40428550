// Minimal diagnostics: one line per event on stderr, "ipcbus[<pid>] <level>: ...".
//
// The level comes from $IPCBUS_LOG (error, warn, info, debug; default warn) and
// can be changed with set_log_level. Thread-safety: any thread; lines do not interleave.
#pragma once

#include <string_view>

namespace ipcbus {

enum class log_level { error = 0, warn = 1, info = 2, debug = 3 };

void set_log_level(log_level level);
bool log_enabled(log_level level);
void log_line(log_level level, std::string_view message);

}  // namespace ipcbus
