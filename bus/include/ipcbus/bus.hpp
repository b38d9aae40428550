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
  // that arrives during start-up is not lost; run_until_signal() then returns at once.
  bool handle_signals = false;
};

class Bus {
 public:
  // Owns its io_context and runs it on a thread of its own. Throws
  // config_error or std::system_error (runtime directory not usable).
  Bus();
  explicit Bus(bus_options options);
  // Uses `io`, which the caller runs. The caller must keep it alive and running.
  Bus(boost::asio::io_context& io, bus_options options);
  // shutdown() with the default drain.
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

  const config& configuration() const;
  const std::string& domain() const;
  const std::filesystem::path& domain_directory() const;
  boost::asio::io_context& io_context();
  // The shared internals, for extensions built on the cores (DynamicPublisher, tools).
  std::shared_ptr<detail::bus_state> state() const { return state_; }

  // "advertise 'a//b': empty segment ('//') is not allowed" — the reason behind ec.
  static std::string describe_failure(std::string_view what, std::string_view name, std::error_code ec);

  // Blocks until SIGINT or SIGTERM arrives (or shutdown() is called from another
  // thread), then shuts down gracefully. Returns the signal number (0 if none).
  int run_until_signal(std::chrono::milliseconds drain = std::chrono::seconds(2));

  // Stops discovery, drains publishers for up to `drain`, closes every
  // publisher and subscriber, removes this process's files, stops the io thread.
  // Idempotent; handles made by this bus report `closed` afterwards.
  void shutdown(std::chrono::milliseconds drain = std::chrono::seconds(2));

 private:
  void start(boost::asio::io_context* external, bus_options options);
  std::shared_ptr<detail::bus_state> state_;
  std::thread thread_;
  struct shutdown_signal;
  std::shared_ptr<shutdown_signal> shutdown_signal_;
};

}  // namespace ipcbus
