// `ipcbus`: inspect and use the bus of this host from a shell (DESIGN.md section 8).
//
// Exit codes: 0 ok, 1 runtime error, 2 usage error. Errors go to stderr as
// "ipcbus: <message>". The commands live in cmd_*.cpp; this file only wires the
// parser to them and turns every failure into its exit code in one place.
#include <iostream>
#include <memory>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli_common.hpp"
#include "commands.hpp"

namespace ipcbus::cli {
namespace {

void add_global_options(CLI::App& app, global_options& g) {
  app.add_option("--config", g.config_file,
                 "Configuration file (default: $IPCBUS_CONFIG, else the embedded defaults)")
      ->check(CLI::ExistingFile);
  app.add_option("--domain", g.domain, "Bus domain to work on (overrides the configuration)");
  app.add_option("--runtime-dir", g.runtime_dir, "Runtime directory (overrides the configuration)");
}

// CLI11 reports help and version requests as "errors" with exit code 0.
int exit_for_parse_error(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
  // CLI11 words an unknown command as "A subcommand is required"; name it instead.
  const auto rest = app.remaining();
  if (app.get_subcommands().empty() && !rest.empty() && rest.front().rfind('-', 0) != 0)
    std::cerr << "ipcbus: unknown command '" << rest.front() << "'";
  else
    std::cerr << "ipcbus: " << e.what();
  std::cerr << "\nRun 'ipcbus --help' (or 'ipcbus COMMAND --help') for usage.\n";
  return exit_usage;
}

int run_chosen(const std::vector<command>& commands) {
  for (const auto& c : commands)
    if (c.app->parsed()) return c.run();
  return exit_usage;  // unreachable: require_subcommand(1)
}

}  // namespace
}  // namespace ipcbus::cli

int main(int argc, char** argv) {
  // Here, not at file scope: this source is compiled in one unit with the
  // commands' (IPCBUS_UNITY_BUILD), and the directive would reach them too.
  using namespace ipcbus::cli;
  CLI::App app{"Inspect and use the ipcbus message bus of this host.\n"
               "Exit codes: 0 ok, 1 runtime error, 2 usage error.",
               "ipcbus"};
  app.require_subcommand(1);
  // Global options are accepted after the command name too: `ipcbus list --domain x`.
  app.fallthrough();
  app.set_version_flag("--version", IPCBUS_VERSION);
  global_options g;
  add_global_options(app, g);
  const std::vector<command> commands = {
      add_list_command(app, g), add_echo_command(app, g), add_pub_command(app, g),
      add_stats_command(app, g), add_gc_command(app, g), add_doctor_command(app, g), add_bench_command(app, g),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return exit_for_parse_error(app, e);
  }
  try {
    return run_chosen(commands);
  } catch (const cli_error& e) {
    std::cerr << "ipcbus: " << e.what() << '\n';
    return e.exit_code();
  } catch (const std::exception& e) {
    // The bus throws std::system_error / config_error with a complete sentence.
    std::cerr << "ipcbus: " << e.what() << '\n';
    return exit_runtime;
  }
}
