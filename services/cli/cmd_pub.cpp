// `ipcbus pub TOPIC --type NAME --json '{...}'`: publishes messages from JSON.
//
// The tool is not compiled with the user's types, so it borrows the type from
// the registry: some live participant must have registered NAME with its
// FileDescriptorSet (today publishers do; subscribers register only the name).
// The JSON becomes a DynamicMessage and goes out through a DynamicPublisher,
// which registers the same name and descriptors as a compiled Publisher<T> would,
// so typed subscribers of NAME accept it.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "commands.hpp"
#include "dynamic_type.hpp"
#include "ipcbus/dynamic_publisher.hpp"

namespace ipcbus::cli {
namespace {

using namespace std::chrono_literals;

struct pub_options {
  std::string topic;
  std::string type;
  std::string json;
  double rate_hz = 10;
  std::uint64_t count = 1;
};

// How long the first message waits for subscribers to attach: discovery takes
// a moment, and a message published before anyone listens reaches nobody.
constexpr auto subscriber_grace = 2s;

std::unique_ptr<dynamic_type> find_type(const global_options& g, const std::string& name) {
  const auto dir = resolve_domain_dir(g);
  std::string source;
  auto type = find_type_in_domain(dir, name, source);
  if (!type)
    throw cli_error(exit_runtime,
                    "type '" + name + "' is not known to the bus in " + dir.string() +
                        ": no live participant registered its descriptors. 'ipcbus pub' can only send types "
                        "a running publisher of the domain has registered (see 'ipcbus list')");
  return type;
}

std::unique_ptr<google::protobuf::Message> parse_json(dynamic_type& type, const std::string& json) {
  auto message = type.new_message();
  const auto status = google::protobuf::util::JsonStringToMessage(json, message.get());
  if (!status.ok()) {
    std::string why(status.message());
    std::replace(why.begin(), why.end(), '\n', ' ');  // the parser's caret diagram: keep one line
    throw cli_error(exit_usage, "--json is not a valid " + type.descriptor()->full_name() + ": " + why);
  }
  return message;
}

// Publishes `count` copies on a fixed schedule (no drift from publish time).
// Returns how many failed; the first failure is reported on stderr.
std::uint64_t publish_all(const pub_options& o, DynamicPublisher& pub, const google::protobuf::Message& m) {
  const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(1.0 / o.rate_hz));
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t failed = 0;
  for (std::uint64_t i = 0; i < o.count && !stop_requested(); ++i) {
    if (i > 0) std::this_thread::sleep_until(start + period * static_cast<std::int64_t>(i));
    std::error_code ec;
    pub.publish(m, ec);
    if (ec && failed++ == 0) std::cerr << "ipcbus: publish on '" << o.topic << "': " << ec.message() << '\n';
  }
  return failed;
}

int run_pub(const global_options& g, const pub_options& o) {
  require_valid_topic(o.topic);
  install_stop_handlers();
  auto type = find_type(g, o.type);
  auto message = parse_json(*type, o.json);
  Bus bus(make_bus_options(g));
  auto pub = DynamicPublisher::advertise(bus, o.topic, type->descriptor());
  if (!pub.wait_for_subscribers(1, subscriber_grace))
    std::cerr << "ipcbus: no subscriber on '" << o.topic << "' yet; publishing anyway\n";
  const std::uint64_t failed = publish_all(o, pub, *message);
  bus.shutdown(2s);  // drains queued frames to the subscribers before the process goes
  if (failed > 0)
    throw cli_error(exit_runtime, std::to_string(failed) + " of " + std::to_string(o.count) +
                                      " message(s) could not be published on '" + o.topic + "'");
  return exit_ok;
}

}  // namespace

command add_pub_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<pub_options>();
  CLI::App* app = root.add_subcommand("pub", "Publish messages given as JSON on a topic");
  app->add_option("topic", opts->topic, "Topic to publish on")->required();
  app->add_option("--type", opts->type, "Full protobuf type name, e.g. demo.Reading")->required();
  app->add_option("--json", opts->json, "The message in protobuf's JSON mapping")->required();
  app->add_option("--rate", opts->rate_hz, "Messages per second when --count > 1")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--count,-n", opts->count, "How many times to publish the message")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->footer(
      "The type must be known to the bus: a live participant of the domain (a publisher of that\n"
      "type) must have registered its descriptors; otherwise pub exits 1. Waits up to 2 s for a\n"
      "subscriber before the first message, and drains before exiting.\n"
      "Exit status: 0 when every message was published, 1 on a bus error or an unknown type,\n"
      "2 on usage errors, an invalid topic, or --json that does not parse as the type.");
  return {app, [&g, opts] { return run_pub(g, *opts); }};
}

}  // namespace ipcbus::cli
