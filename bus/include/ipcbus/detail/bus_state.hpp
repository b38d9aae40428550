// State shared by a Bus and every publisher/subscriber it made. Internal.
//
// Cores keep a shared_ptr to it, so the io_context outlives every handler that
// might still reference it even if the Bus object goes away first.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "ipcbus/config.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transport.hpp"

namespace ipcbus::detail {

class subscriber_core;
class publisher_core;

struct bus_state : std::enable_shared_from_this<bus_state> {
  // Called after every reload attempt: an empty error_code on success, else
  // config_error (or invalid_argument: no file) and the message that says why.
  using reload_handler = std::function<void(const std::error_code&, const std::string&)>;

  // Fixed for the bus's life: where it lives. A reload never moves it.
  std::string domain;
  std::filesystem::path runtime_dir;  // as configured (empty: the environment's fallbacks)
  std::filesystem::path domain_dir;
  std::unique_ptr<boost::asio::io_context> owned_io;  // null with an external io_context
  boost::asio::io_context* io = nullptr;
  transport_registry transports;
  std::string host;
  std::uint64_t host_id = 0;
  std::atomic<bool> closed{false};

  // Subscribers to tell when the directory changes (io thread only after setup).
  std::mutex subscribers_mutex;
  std::vector<std::weak_ptr<subscriber_core>> subscribers;
  std::vector<std::weak_ptr<publisher_core>> publishers;  // closed at shutdown
  std::unique_ptr<directory_watcher> watcher;
  std::unique_ptr<boost::asio::steady_timer> rescan_timer;

  // Links that asked to be polled rather than slept on (spin_us, busy_poll);
  // io thread only. Used only when the bus runs its own io thread.
  std::vector<std::shared_ptr<link_poller>> pollers;

  // The configuration in force: what publishers and subscribers created from
  // now on are set up with. Any thread.
  std::shared_ptr<const config> current_config() const;
  // Puts `cfg` in force as it is. The first call (Bus::start) also records the
  // source's domain and runtime_dir, given before the Bus's overrides.
  void set_config(config cfg, const std::string& source_domain, const std::filesystem::path& source_runtime_dir);
  // Re-reads the file the configuration came from and puts it in force; on any
  // error the configuration in force stays. Logs the outcome, calls the reload
  // handler. Any thread; blocks only on reading the file.
  std::error_code reload_config(std::string& message);
  void set_reload_handler(reload_handler handler);

  // The body of the bus's own io thread: runs the io_context, polling the
  // links above between handlers while any exist.
  void run_io();

  // Registers a subscriber and starts discovery for it on the io thread.
  void add_subscriber(const std::shared_ptr<subscriber_core>& s);
  // Rescans for every live subscriber (io thread).
  void rescan_all();
  void stop_discovery();

 private:
  mutable std::mutex config_mutex_;
  std::shared_ptr<const config> config_;  // guarded by config_mutex_
  reload_handler on_reload_;              // guarded by config_mutex_
  // domain and runtime_dir as the configuration source last said (before the
  // Bus's overrides), so that a reload can tell a change it cannot apply.
  std::string source_domain_;             // guarded by reload_mutex_
  std::filesystem::path source_runtime_dir_;
  std::mutex reload_mutex_;               // one reload at a time

  void start_watching();
  void arm_rescan_timer();
  // Polls until every poller has been idle for its spin budget (never, under busy_poll).
  void spin_until_idle();
};

}  // namespace ipcbus::detail
