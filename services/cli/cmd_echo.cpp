// `ipcbus echo PATTERN`: prints every message on matching topics as JSON.
//
// Subscribes with ipcbus::Bytes, which accepts any type, and decodes each payload
// with the FileDescriptorSet its publisher registered: the tool prints types it
// was never compiled with. Messages are pulled on the main thread so decoding
// and printing never hold up the bus's io thread.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "dynamic_type.hpp"
#include "ipcbus/registry.hpp"
#include "json_text.hpp"

namespace ipcbus::cli {
namespace {

using namespace std::chrono_literals;

struct echo_options {
  std::string pattern;
  std::uint64_t count = 0;  // 0: no limit
  double timeout_s = 0;     // 0: no limit
  bool json = false;
};

std::string text_line(const MessageInfo& info, std::string_view payload, const message_decoder::result& r) {
  std::string line = info.topic + " #" + std::to_string(info.sequence) + " ";
  if (r.decoded) return line + r.json;
  return line + "bytes[" + std::to_string(payload.size()) + "] " + hex_preview(payload);
}

std::string json_line(const MessageInfo& info, std::string_view payload, const message_decoder::result& r) {
  json_object o;
  o.add("topic", info.topic).add("sequence", info.sequence).add("publisher", id_to_hex(info.publisher_id));
  o.add("lost_before", info.lost_before);
  if (r.decoded) return o.add_raw("message", r.json).str();
  // Raw (or undecodable) payloads travel as base64, like protobuf's JSON `bytes`.
  o.add("size", payload.size()).add("bytes", base64(payload));
  if (!r.problem.empty()) o.add("error", r.problem);
  return o.str();
}

void print_message(const echo_options& o, message_decoder& decoder, const Received<Bytes>& m) {
  const auto payload = m.message.bytes();
  const auto r = decoder.decode(m.info.publisher_id, payload);
  if (!r.problem.empty() && !o.json) std::cerr << "ipcbus: " << m.info.topic << ": " << r.problem << '\n';
  if (m.info.lost_before > 0 && !o.json)  // JSON carries it in lost_before
    std::cerr << "ipcbus: " << m.info.topic << ": " << m.info.lost_before << " message(s) lost before #"
              << m.info.sequence << '\n';
  // Flushed per line: echo is usually piped into grep/jq and must not sit on a buffer.
  std::cout << (o.json ? json_line(m.info, payload, r) : text_line(m.info, payload, r)) << std::endl;
}

// Receives until --count, --timeout or a stop signal. Returns how many printed.
std::uint64_t echo_loop(const echo_options& o, Subscriber<Bytes>& sub, message_decoder& decoder) {
  using clock = std::chrono::steady_clock;
  const std::optional<clock::time_point> deadline =
      o.timeout_s > 0 ? std::optional(clock::now() + std::chrono::duration_cast<clock::duration>(
                                                         std::chrono::duration<double>(o.timeout_s)))
                      : std::nullopt;
  std::uint64_t printed = 0;
  while (!stop_requested() && (o.count == 0 || printed < o.count)) {
    auto wait = std::chrono::milliseconds(100);  // short, so the stop flag is seen promptly
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - clock::now());
      if (left <= 0ms) break;
      wait = std::min(wait, left);
    }
    if (auto m = sub.receive(wait)) {
      print_message(o, decoder, *m);
      ++printed;
    }
  }
  return printed;
}

int run_echo(const global_options& g, const echo_options& o) {
  require_valid_pattern(o.pattern);
  install_stop_handlers();
  Bus bus(make_bus_options(g));
  auto sub = bus.subscribe<Bytes>(o.pattern);
  message_decoder decoder(bus.domain_directory());
  const std::uint64_t printed = echo_loop(o, sub, decoder);
  sub.close();
  bus.shutdown(0ms);  // a subscriber has nothing to drain
  if (stop_requested() || (o.count > 0 && printed >= o.count)) return exit_ok;
  // Reached the timeout: success means "saw traffic" (or all of --count).
  if (o.count > 0)
    throw cli_error(exit_runtime, "only " + std::to_string(printed) + " of " + std::to_string(o.count) +
                                      " message(s) on '" + o.pattern + "' within the timeout");
  if (printed == 0) throw cli_error(exit_runtime, "no message on '" + o.pattern + "' within the timeout");
  return exit_ok;
}

}  // namespace

command add_echo_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<echo_options>();
  CLI::App* app = root.add_subcommand("echo", "Print the messages published on matching topics");
  app->add_option("pattern", opts->pattern, "Topic or pattern ('*' = one segment, trailing '#' = any depth)")
      ->required();
  // The check matters: CLI11 would wrap "-3" into a huge unsigned count.
  app->add_option("--count,-n", opts->count, "Exit after N messages (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--timeout,-t", opts->timeout_s, "Give up after SECONDS (0: wait forever)")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--json", opts->json, "Print one JSON object per message");
  app->footer(
      "Output: '<topic> #<sequence> <message as JSON>' per line, decoded with the type the publisher\n"
      "registered (no compiled types needed). Raw bytes topics show 'bytes[N]' and a hex preview of\n"
      "the first 64 bytes. With --json: {\"topic\",\"sequence\",\"publisher\",\"lost_before\",\"message\"};\n"
      "raw payloads carry \"size\" and \"bytes\" (base64) instead of \"message\". Gaps are reported\n"
      "on stderr (or in lost_before).\n"
      "Exit status: 0 after --count messages, on SIGINT/SIGTERM, or at --timeout when at least one\n"
      "message was printed (without --count). 1 when --timeout passes with no message, or with\n"
      "fewer than --count messages.");
  return {app, [&g, opts] { return run_echo(g, *opts); }};
}

}  // namespace ipcbus::cli
