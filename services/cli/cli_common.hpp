// Shared pieces of the `ipcbus` tool: global options, exit codes, configuration,
// argument checks, the stop flag and table output.
//
// Every command reports failure by throwing cli_error with the exit code it
// wants; main() prints "ipcbus: <message>" on stderr and exits with that code,
// so no command prints its own error prefix or calls exit().
#pragma once

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ipcbus/bus.hpp"
#include "ipcbus/config.hpp"
#include "ipcbus/control.pb.h"

namespace CLI {
class App;
}

namespace ipcbus::cli {

// Exit codes of every command (DESIGN.md section 8).
inline constexpr int exit_ok = 0;
inline constexpr int exit_runtime = 1;  // the bus, a file or a peer failed us
inline constexpr int exit_usage = 2;    // the command line itself is wrong

class cli_error : public std::runtime_error {
 public:
  cli_error(int exit_code, const std::string& message) : std::runtime_error(message), code_(exit_code) {}
  int exit_code() const { return code_; }

 private:
  int code_;
};

// Options that apply to every command. Empty strings mean "not given".
struct global_options {
  std::string config_file;
  std::string domain;
  std::string runtime_dir;
};

// One subcommand: where CLI11 parsed it, and what runs when it was chosen.
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// The configuration the options select: --config, else $IPCBUS_CONFIG, else the
// embedded defaults; then --domain and --runtime-dir on top. Throws cli_error
// (exit_runtime for an unreadable/invalid file, exit_usage for a bad --domain).
config resolve_config(const global_options& g);
bus_options make_bus_options(const global_options& g);
// <runtime>/<domain> for the resolved configuration. Nothing is created.
std::filesystem::path resolve_domain_dir(const global_options& g);

// Throw cli_error(exit_usage) naming what is wrong with a topic or pattern.
void require_valid_topic(std::string_view topic);
void require_valid_pattern(std::string_view pattern);

// SIGINT/SIGTERM set a flag instead of killing the process, so long-running
// commands (echo, pub) can leave the bus cleanly: unregister, drain, exit 0.
void install_stop_handlers();
bool stop_requested();

// Human-readable names used by list, stats and gc.
std::string role_name(Role role);
std::string qos_name(Qos qos);
std::string type_label(const Participant& p);  // the full type name, or "bytes"

// Prints rows in aligned columns under a header; cells may not contain newlines.
void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);

}  // namespace ipcbus::cli
