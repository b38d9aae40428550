// `ipcbus-bridge`: carries exported topics between this host's bus and peer
// buses over TCP (docs/bridge.md). Settings come from the configuration's
// `bridge:` section; command-line flags override them.
//
// Exit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime error, 2 usage error.
// SIGINT/SIGTERM first send what is queued (--drain-ms); SIGHUP reloads the exports.
#include <signal.h>

#include <fstream>
#include <functional>
#include <iostream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <CLI/CLI.hpp>

#include "bridge.hpp"
#include "ipcbus/log.hpp"

namespace {

constexpr std::chrono::milliseconds default_drain{2000};

struct flags {
  std::string config_file, domain, runtime_dir, listen, token, token_file, tls_cert, tls_key, tls_ca;
  std::vector<std::string> peers, exports;
  bool no_listen = false;
  // 0 (and drain_given false): not given, the configuration or the default applies.
  unsigned backoff_max_ms = 0, heartbeat_ms = 0, link_timeout_ms = 0, max_hops = 0;
  unsigned drain_ms = 0, handshake_timeout_ms = 0, write_stall_ms = 0, linger_ms = 0;
  bool drain_given = false;
  std::uint64_t queue_bytes = 0;
  std::string log_level;
};

int run(const flags& f) {
  ipcbus::bus_options bo;
  bo.cfg = f.config_file.empty() ? ipcbus::load_config_from_environment() : ipcbus::load_config_file(f.config_file);
  bo.domain = f.domain;
  bo.runtime_dir = f.runtime_dir;
  const ipcbus::bridge_settings& cfg = bo.cfg->bridge;
  ipcbus::bridge::bridge_options o;
  o.listen = f.no_listen ? "" : f.listen.empty() ? cfg.listen : f.listen;
  o.peers = f.peers.empty() ? cfg.peers : f.peers;
  o.exports = f.exports.empty() ? cfg.export_patterns : f.exports;
  o.token = cfg.token;
  if (!f.token.empty()) o.token = f.token;
  if (!f.token_file.empty()) {
    std::ifstream in(f.token_file);
    if (!in || !std::getline(in, o.token)) {
      std::cerr << "ipcbus-bridge: cannot read the token from " << f.token_file << '\n';
      return 1;
    }
  }
  o.tls_cert = f.tls_cert.empty() ? cfg.tls_cert : f.tls_cert;
  o.tls_key = f.tls_key.empty() ? cfg.tls_key : f.tls_key;
  o.tls_ca = f.tls_ca.empty() ? cfg.tls_ca : f.tls_ca;
  // Each timing and limit: the flag, else the configuration, else the default.
  using std::chrono::milliseconds;
  const auto pick = [](auto& field, unsigned flag, milliseconds configured) {
    if (flag) field = milliseconds(flag);
    else if (configured.count()) field = configured;
  };
  pick(o.backoff_max, f.backoff_max_ms, cfg.backoff_max);
  pick(o.limits.heartbeat, f.heartbeat_ms, cfg.heartbeat);
  pick(o.limits.timeout, f.link_timeout_ms, cfg.link_timeout);
  pick(o.limits.handshake_timeout, f.handshake_timeout_ms, cfg.handshake_timeout);
  pick(o.limits.write_stall, f.write_stall_ms, cfg.write_stall);
  if (f.max_hops) o.max_hops = f.max_hops;
  else if (cfg.max_hops) o.max_hops = cfg.max_hops;
  if (f.queue_bytes) o.limits.queue_bytes = f.queue_bytes;
  else if (cfg.queue_bytes) o.limits.queue_bytes = cfg.queue_bytes;
  pick(o.republisher_linger, f.linger_ms, cfg.linger);
  const milliseconds drain = f.drain_given ? milliseconds(f.drain_ms) : cfg.drain.value_or(default_drain);
  // A frame is at most the largest max_message of any rule plus its header;
  // a record carrying it a little more.
  std::uint64_t largest = bo.cfg->defaults.max_message;
  for (const auto& rule : bo.cfg->topics) largest = std::max(largest, rule.settings.max_message);
  o.limits.max_record = static_cast<std::size_t>(largest) + ipcbus::max_frame_overhead + 64 * 1024;
  if (o.listen.empty() && o.peers.empty()) {
    std::cerr << "ipcbus-bridge: nothing to do: no bridge.listen and no bridge.peers (or --listen / --peer)\n";
    return 2;
  }

  boost::asio::io_context io;
  // Signals first, so that a stop during start-up is not lost.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  ipcbus::Bus bus(bo);
  ipcbus::bridge::bridge b(io, bus, o);
  std::error_code ec;
  std::string why;
  b.start(ec, why);
  if (ec) {
    std::cerr << "ipcbus-bridge: " << why << '\n';
    return ec == ipcbus::errc::invalid_argument ? 2 : 1;
  }
  ipcbus::log_line(ipcbus::log_level::info, "bridge: domain '" + bus.domain() + "' listening on '" + o.listen +
                                                "', " + std::to_string(o.peers.size()) + " peer(s) to dial");
  if (!o.listen.empty()) std::cout << "listening " << b.listen_port() << std::endl;  // tests and scripts read it
  // What the links run with, wherever each figure came from.
  std::cout << "settings heartbeat_ms " << o.limits.heartbeat.count() << " link_timeout_ms "
            << o.limits.timeout.count() << " write_stall_ms " << o.limits.write_stall.count()
            << " handshake_timeout_ms " << o.limits.handshake_timeout.count() << " backoff_max_ms "
            << o.backoff_max.count() << " linger_ms " << b.republisher_linger().count() << " drain_ms "
            << drain.count() << " max_hops " << o.max_hops << " queue_bytes " << o.limits.queue_bytes << std::endl;
  // SIGHUP reloads the configuration as in every ipcbus process (topic rules
  // for what is created afterwards, docs/architecture.md) and takes its export
  // patterns; the rest of `bridge:` (listen, peers, token, TLS) is fixed for
  // the process's life: changing it means other connections, so restart the
  // bridge for that.
  const auto reload = [&] {
    std::error_code rec;
    bus.reload_config(rec);  // logs what is wrong with the file itself
    if (rec) {
      ipcbus::log_line(ipcbus::log_level::warn, "bridge: SIGHUP: configuration not reloaded: " + rec.message());
      return;
    }
    if (!f.exports.empty()) {
      ipcbus::log_line(ipcbus::log_level::info, "bridge: SIGHUP: the exports come from --export and stay");
      return;
    }
    const auto cfg = bus.configuration();
    std::string reason;
    if (!b.set_exports(cfg.bridge.export_patterns, reason))
      ipcbus::log_line(ipcbus::log_level::warn, "bridge: SIGHUP: keeping the exports: " + reason);
    else
      ipcbus::log_line(ipcbus::log_level::info, "bridge: SIGHUP: exports reloaded from " + cfg.source);
  };
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& sec, int number) {
        if (sec) return;
        if (number == SIGHUP) {
          reload();
        } else {
          // The first SIGINT/SIGTERM lets the links send what is queued (up to
          // --drain-ms); a second one stops at once.
          ipcbus::log_line(ipcbus::log_level::info, "bridge: stopping: sending what is queued");
          b.drain(drain, [&] { io.stop(); });
        }
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  io.run();
  b.stop();
  bus.shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"Carry exported topics of this host's bus to peer buses over TCP, and republish what peers send.\n"
               "Settings come from the configuration's bridge: section; flags override them.\n"
               "Exit codes: 0 stopped by a signal, 1 runtime error, 2 usage error.",
               "ipcbus-bridge"};
  flags f;
  app.add_option("--config", f.config_file, "Configuration file (default: $IPCBUS_CONFIG, else embedded defaults)")
      ->check(CLI::ExistingFile);
  app.add_option("--domain", f.domain, "Bus domain to join (overrides the configuration)");
  app.add_option("--runtime-dir", f.runtime_dir, "Runtime directory (overrides the configuration)");
  app.add_option("--listen", f.listen, "Accept peers on tcp://HOST:PORT (port 0: any free port)");
  app.add_flag("--no-listen", f.no_listen, "Do not listen, only dial");
  app.add_option("--peer", f.peers, "Dial tcp://HOST:PORT (repeatable)");
  app.add_option("--export", f.exports, "Offer local topics matching this pattern to peers (repeatable)");
  app.add_option("--token", f.token, "Shared secret (visible in ps: prefer --token-file or the configuration)");
  app.add_option("--token-file", f.token_file, "Read the shared secret from the first line of this file");
  app.add_option("--tls-cert", f.tls_cert, "TLS: this bridge's certificate chain (PEM)");
  app.add_option("--tls-key", f.tls_key, "TLS: its private key (PEM)");
  app.add_option("--tls-ca", f.tls_ca, "TLS: CA certificate(s) that peers' certificates must chain to (PEM)");
  app.add_option("--backoff-max-ms", f.backoff_max_ms, "Longest wait between dial attempts (default 2000)");
  app.add_option("--heartbeat-ms", f.heartbeat_ms, "Ping interval on an idle link (default 500)");
  app.add_option("--link-timeout-ms", f.link_timeout_ms, "Close a link after hearing nothing this long (default 3000)");
  app.add_option("--write-stall-ms", f.write_stall_ms,
                 "Close a link whose peer still talks but takes in nothing written to it this long (default 30000)");
  app.add_option("--handshake-timeout-ms", f.handshake_timeout_ms,
                 "Close a connection whose handshake is not done after this long (default 2000)");
  app.add_option("--max-hops", f.max_hops, "Carry a frame over at most this many links, passing on included (default 4)");
  app.add_option("--drain-ms", f.drain_ms,
                 "On SIGINT/SIGTERM, how long queued frames may take to reach peers (default 2000; 0: none)");
  app.add_option("--linger-ms", f.linger_ms,
                 "Keep a topic's republisher this long after the last link bringing it ended, for a link that "
                 "comes back (default: twice the link timeout + backoff max + handshake timeout)");
  app.add_option("--queue-bytes", f.queue_bytes, "Bytes queued per peer before QoS applies (default 8 MiB)");
  app.add_option("--log-level", f.log_level, "error, warn, info or debug (default: $IPCBUS_LOG, else warn)")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  try {
    app.parse(argc, argv);
    f.drain_given = app.count("--drain-ms") > 0;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "ipcbus-bridge: " << e.what() << "\nRun 'ipcbus-bridge --help' for usage.\n";
    return 2;
  }
  if (!f.log_level.empty()) {
    using ipcbus::log_level;
    ipcbus::set_log_level(f.log_level == "error" ? log_level::error
                          : f.log_level == "warn" ? log_level::warn
                          : f.log_level == "info" ? log_level::info
                                                  : log_level::debug);
  }
  try {
    return run(f);
  } catch (const ipcbus::config_error& e) {
    std::cerr << "ipcbus-bridge: " << e.what() << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ipcbus-bridge: " << e.what() << '\n';
    return 1;
  }
}
