// The subcommands of `ipcbus`. Each add_*_command registers its options on the
// root app and returns the command whose run() main() calls when it was chosen.
// `g` is filled in by the parser before run() is called, so commands read it then.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.hpp"

namespace ipcbus::cli {

command add_list_command(CLI::App& root, const global_options& g);
command add_echo_command(CLI::App& root, const global_options& g);
command add_pub_command(CLI::App& root, const global_options& g);
command add_stats_command(CLI::App& root, const global_options& g);
command add_gc_command(CLI::App& root, const global_options& g);
command add_doctor_command(CLI::App& root, const global_options& g);
command add_bench_command(CLI::App& root, const global_options& g);

}  // namespace ipcbus::cli
