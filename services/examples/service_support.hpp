// Small helpers shared by the demo programs (sensor, filter, logger, ipcbus-demo).
//
// Each service is an ordinary ipcbus program; the only demo-specific part is the
// readiness notice: ipcbus-demo starts the services in order (logger, filter,
// sensors) and waits until each says it is ready before starting the next, so
// that no reading is published before the services downstream are listening.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "ipcbus/bus.hpp"

namespace ipcbus::examples {

// The launcher passes the write end of a pipe in this variable.
inline constexpr const char* ready_fd_variable = "IPCBUS_DEMO_READY_FD";

// CLI11_PARSE with the exit statuses of the ipcbus tools: 0 after --help, 2 for
// a usage error. Returns the status to exit with, or nothing to carry on.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

// Bus options from `--config FILE`; without one, the environment decides
// (IPCBUS_CONFIG, else the embedded defaults).
inline bus_options options_from(const std::string& config_file) {
  bus_options options;
  if (!config_file.empty()) options.cfg = load_config_file(config_file);
  options.handle_signals = true;  // a SIGTERM during start-up still stops us cleanly
  return options;
}

// Tells the launcher (if any) that this service is subscribed/advertised and
// running: writes one byte to the pipe named by IPCBUS_DEMO_READY_FD and closes it.
// Run stand-alone, the variable is unset and this does nothing.
inline void notify_ready() {
  const char* value = std::getenv(ready_fd_variable);
  if (value == nullptr || *value == '\0') return;
  char* end = nullptr;
  const long fd = std::strtol(value, &end, 10);
  if (*end != '\0' || fd < 0) return;
  const char byte = '\n';
  while (::write(static_cast<int>(fd), &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(static_cast<int>(fd));
  ::unsetenv(ready_fd_variable);  // once only
}

// One line on stdout, prefixed with the service's name and pid, flushed at once:
// the launcher's output and the services' share a terminal (or a pipe in tests).
inline void say(const std::string& who, const std::string& text) {
  std::cout << "  [" << who << ", pid " << ::getpid() << "] " << text << std::endl;
}

}  // namespace ipcbus::examples
