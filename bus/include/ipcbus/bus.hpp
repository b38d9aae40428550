// ipcbus::Bus — a process's connection to one bus domain on this host.
//
//   ipcbus::Bus bus;                                     // domain from IPCBUS_CONFIG or "default"
//   auto pub = bus.advertise<demo::Reading>("sensors/temp");
//   auto sub = bus.subscribe<demo::Reading>("sensors/#",
//       [](const demo::Reading& r, const ipcbus::MessageInfo& info) { ... });
//   pub.publish(reading);
//
// The Bus owns an io_context and one thread that runs it (or uses an io_context
// you pass and run yourself). Subscriber callbacks, discovery and socket I/O run
// on that thread. Publishing is thread-safe and writes on the caller's thread.
// Which transport and QoS a topic uses comes from the configuration, not code.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "ipcbus/config.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/message.hpp"
#include "ipcbus/publisher.hpp"
#include "ipcbus/subscriber.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus {

struct bus_options {
  std::optional<config> cfg;           // empty: load_config_from_environment()
  std::string domain;                  // overrides cfg.domain when set
  std::filesystem::path runtime_dir;   // overrides cfg.runtime_dir when set
  // Catch SIGINT/SIGTERM from construction on (for services), so a stop request
  // that arrives during start-up is not lost; run_until_signal() then returns at
  // once. SIGHUP then reloads the configuration (reload_config()).
  bool handle_signals = false;
};

class Bus {
 public:
  // Owns its io_context and runs it on a thread of its own. Throws
  // config_error or std::system_error (runtime directory not usable).
  Bus();
  explicit Bus(bus_options options);
  // Uses `io`, which the caller runs. The caller must keep it alive and running,
  // on one thread at a time: the bus's handlers are not synchronised with each
  // other. An exception from a subscriber callback comes out of the caller's
  // run(); running it again carries on with the next message.
  Bus(boost::asio::io_context& io, bus_options options);
  // shutdown() with the configured drain.
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  // Creates a publisher on `topic` with the transport and QoS its config rule
  // names. Errors: invalid_topic, unknown_transport, or the transport's error.
  template <class T>
  Publisher<T> advertise(std::string_view topic) {
    std::error_code ec;
    auto p = advertise<T>(topic, ec);
    throw_if(ec, describe_failure("advertise", topic, ec));
    return p;
  }
  template <class T>
  Publisher<T> advertise(std::string_view topic, std::error_code& ec) {
    auto core = detail::publisher_core::create(state_, topic, message_traits<T>::type_name(),
                                               message_traits<T>::descriptor(), ec);
    return ec ? Publisher<T>{} : Publisher<T>(std::move(core));
  }

  // Callback mode: `callback(const T&, const MessageInfo&)` runs on the io thread.
  // For Bytes the argument is a view valid only during the call.
  template <class T, class F>
  Subscriber<T> subscribe(std::string_view pattern, F&& callback) {
    std::error_code ec;
    auto s = subscribe<T>(pattern, std::forward<F>(callback), ec);
    throw_if(ec, describe_failure("subscribe", pattern, ec));
    return s;
  }
  template <class T, class F>
  Subscriber<T> subscribe(std::string_view pattern, F&& callback, std::error_code& ec) {
    auto scratch = std::make_shared<T>();  // reused for every message: no allocation per message
    detail::subscriber_core::frame_handler handler =
        [scratch, cb = std::forward<F>(callback)](const frame_view& f, const MessageInfo& info) mutable {
          if (!message_traits<T>::parse(f.payload, *scratch)) return false;
          cb(static_cast<const T&>(*scratch), info);
          return true;
        };
    auto core = detail::subscriber_core::create(state_, pattern, message_traits<T>::type_name(),
                                                std::move(handler), ec);
    return ec ? Subscriber<T>{} : Subscriber<T>(std::move(core));
  }

  // Pull mode: messages wait in a queue of the topic's depth for receive().
  template <class T>
  Subscriber<T> subscribe(std::string_view pattern) {
    std::error_code ec;
    auto s = subscribe<T>(pattern, ec);
    throw_if(ec, describe_failure("subscribe", pattern, ec));
    return s;
  }
  template <class T>
  Subscriber<T> subscribe(std::string_view pattern, std::error_code& ec) {
    auto core = detail::subscriber_core::create(state_, pattern, message_traits<T>::type_name(), {}, ec);
    return ec ? Subscriber<T>{} : Subscriber<T>(std::move(core));
  }

  // A copy of the configuration in force (the latest one reload_config() put in force).
  config configuration() const;
  const std::string& domain() const;
  const std::filesystem::path& domain_directory() const;
  boost::asio::io_context& io_context();
  // The shared internals, for extensions built on the cores (DynamicPublisher, tools).
  std::shared_ptr<detail::bus_state> state() const { return state_; }

  // "advertise 'a//b': empty segment ('//') is not allowed" — the reason behind ec.
  static std::string describe_failure(std::string_view what, std::string_view name, std::error_code ec);

  // Re-reads the configuration file this bus was built from (IPCBUS_CONFIG, or
  // the file load_config_file read) and puts it in force: publishers and
  // subscribers created afterwards follow its rules; existing ones keep the
  // settings they were created with. `domain` and `runtime_dir` never change
  // (a different value in the file is logged and ignored). Blocks only on
  // reading the file. Errors: config_error (the file is unreadable or invalid;
  // the message names file, line and key), invalid_argument (the configuration
  // did not come from a file), closed. On error the configuration in force
  // stays. The outcome is logged and passed to the reload handler.
  // SIGHUP does the same when signals are handled (handle_signals, run_until_signal).
  void reload_config();  // throws config_error (what() says why) or std::system_error
  void reload_config(std::error_code& ec);

  // Called after every reload attempt (SIGHUP or reload_config()), on the thread
  // that reloaded (the io thread for SIGHUP): `ec` is empty when the new
  // configuration is in force, else the error and `message` says why. Replaces
  // any earlier handler; an empty function removes it. Must not call reload_config().
  void on_config_reload(std::function<void(const std::error_code& ec, const std::string& message)> handler);

  // Blocks until SIGINT or SIGTERM arrives (or shutdown() is called from another
  // thread), then shuts down gracefully. While it waits, SIGHUP reloads the
  // configuration. Returns the signal number (0 if none). Without `drain`, the
  // configuration's shutdown.drain_ms (2 s by default) bounds the drain.
  int run_until_signal();
  int run_until_signal(std::chrono::milliseconds drain);

  // Stops discovery, drains publishers for up to `drain` (without it: the
  // configuration's shutdown.drain_ms), closes every publisher and subscriber,
  // removes this process's files, stops the io thread. Idempotent; handles
  // made by this bus report `closed` afterwards.
  void shutdown();
  void shutdown(std::chrono::milliseconds drain);

 private:
  void start(boost::asio::io_context* external, bus_options options);
  // Catches the signals, then blocks until a stop is requested; returns its signal (0: shutdown()).
  int wait_for_stop();
  std::shared_ptr<detail::bus_state> state_;
  std::thread thread_;
  struct shutdown_signal;
  std::shared_ptr<shutdown_signal> shutdown_signal_;
};

}  // namespace ipcbus
