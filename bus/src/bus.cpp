#include "ipcbus/bus.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <fstream>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include "ipcbus/detail/cpu_relax.hpp"
#include "ipcbus/detail/publisher_core.hpp"
#include "ipcbus/detail/subscriber_core.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/topic.hpp"
#if IPCBUS_HAVE_SOCKET
#include "ipcbus/transports/socket.hpp"
#endif
#if IPCBUS_HAVE_SHM
#include "ipcbus/transports/shm.hpp"
#endif
#if IPCBUS_HAVE_PIPE
#include "ipcbus/transports/pipe.hpp"
#endif
#if IPCBUS_HAVE_MQUEUE
#include "ipcbus/transports/mqueue.hpp"
#endif

namespace ipcbus {

namespace asio = boost::asio;

// ---- bus_state ----------------------------------------------------------------

namespace detail {

void bus_state::run_io() {
  auto guard = asio::make_work_guard(*io);
  while (!io->stopped()) {
    if (!pollers.empty()) {
      spin_until_idle();
      if (io->stopped()) break;
      for (auto& p : pollers) p->prepare_sleep();  // from now on, data wakes us through the link's eventfd
    }
    io->run_one();
  }
}

void bus_state::spin_until_idle() {
  using clock = std::chrono::steady_clock;
  // Asio's poll() costs a system call (epoll_wait with no timeout): do it only
  // every io_poll_interval, busy or idle, so that other handlers (other
  // transports' links, timers, discovery, shutdown) are never starved.
  constexpr auto io_poll_interval = std::chrono::microseconds(20);
  // Between two rounds that found nothing only the links' ready() is looked
  // at, up to this many times: a round reads the clock (the spin budget, the
  // io poll; a link's poll checks its publisher's liveness) and takes several
  // times longer than a glance at a ring's tail, which is all that noticing
  // the next frame needs. (The clock costs 28-85 ns on a VM with kvm-clock.)
  // A frame that lands during a round waits for it: with 64 glances (a pause
  // each, about 30 ns here) the io thread is in a round a few per cent of the
  // idle time instead of a fifth, and a round still comes every 2-3 us. A
  // glance looks at every link, so with more links there are fewer glances
  // per round (at least 4), to keep rounds as frequent.
  constexpr unsigned glances_per_round = 64;
  constexpr unsigned min_glances_per_round = 4;
  clock::time_point idle_since{};
  clock::time_point last_io_poll = clock::now();
  for (;;) {
    bool worked = false;
    // By index: a delivered frame's handler may subscribe and so append to
    // pollers; only this loop removes from it, so every element stays alive.
    for (std::size_t i = 0; i < pollers.size(); ++i) worked = pollers[i]->poll() || worked;
    std::erase_if(pollers, [](const auto& p) { return p->finished(); });
    if (pollers.empty()) return;
    const auto now = clock::now();
    if (now - last_io_poll >= io_poll_interval) {
      last_io_poll = now;
      if (io->poll() > 0) worked = true;
      if (io->stopped()) return;
    }
    if (worked) {
      idle_since = {};
      continue;
    }
    bool forever = false;
    std::chrono::microseconds budget{0};
    for (const auto& p : pollers) {
      forever = forever || p->busy_poll();
      budget = std::max(budget, p->spin());
    }
    if (idle_since == clock::time_point{}) idle_since = now;
    else if (!forever && now - idle_since >= budget) return;
    const unsigned glances = std::max<unsigned>(
        min_glances_per_round, glances_per_round / static_cast<unsigned>(std::min<std::size_t>(pollers.size(), 64)));
    for (unsigned glance = 0; glance < glances; ++glance) {
      cpu_relax();
      if (std::any_of(pollers.begin(), pollers.end(), [](const auto& p) { return p->ready(); })) break;
    }
  }
}

void bus_state::add_subscriber(const std::shared_ptr<subscriber_core>& s) {
  {
    std::lock_guard lock(subscribers_mutex);
    subscribers.push_back(s);
  }
  asio::post(*io, [self = shared_from_this(), weak = std::weak_ptr<subscriber_core>(s)] {
    if (self->closed) return;
    if (!self->watcher) self->start_watching();
    if (auto sub = weak.lock()) sub->rescan();
  });
}

void bus_state::start_watching() {
  std::error_code ec;
  std::weak_ptr<bus_state> weak = shared_from_this();
  watcher = std::make_unique<directory_watcher>(*io, domain_dir, [weak] {
    if (auto self = weak.lock()) self->rescan_all();
  }, ec);
  if (ec) log_line(log_level::warn, "cannot watch " + domain_dir.string() + " (" + ec.message() +
                                        "); discovering by polling only");
  rescan_timer = std::make_unique<asio::steady_timer>(*io);
  arm_rescan_timer();
}

// inotify is the fast path; a slow periodic scan covers anything it might miss.
void bus_state::arm_rescan_timer() {
  rescan_timer->expires_after(std::chrono::milliseconds(500));
  rescan_timer->async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed) return;
    self->rescan_all();
    self->arm_rescan_timer();
  });
}

void bus_state::rescan_all() {
  std::vector<std::shared_ptr<subscriber_core>> live;
  {
    std::lock_guard lock(subscribers_mutex);
    std::erase_if(subscribers, [&](const auto& w) {
      auto s = w.lock();
      if (!s) return true;
      live.push_back(std::move(s));
      return false;
    });
  }
  for (auto& s : live) s->rescan();
}

void bus_state::stop_discovery() {
  if (watcher) watcher->close();
  if (rescan_timer) rescan_timer->cancel();
}

std::shared_ptr<const config> bus_state::current_config() const {
  std::lock_guard lock(config_mutex_);
  return config_;
}

void bus_state::set_config(config cfg, const std::string& source_domain,
                           const std::filesystem::path& source_runtime_dir) {
  auto fresh = std::make_shared<const config>(std::move(cfg));
  std::lock_guard lock(config_mutex_);
  config_ = std::move(fresh);
  source_domain_ = source_domain;
  source_runtime_dir_ = source_runtime_dir;
}

void bus_state::set_reload_handler(reload_handler handler) {
  std::lock_guard lock(config_mutex_);
  on_reload_ = std::move(handler);
}

std::error_code bus_state::reload_config(std::string& message) {
  std::lock_guard reload_lock(reload_mutex_);
  const auto old = current_config();
  std::error_code ec;
  message.clear();
  if (closed) {
    ec = make_error_code(errc::closed);
    message = "the bus is shut down";
  } else if (old->file.empty()) {
    ec = make_error_code(errc::invalid_argument);
    message = "no configuration file to reload: the configuration in force is " + old->source;
  } else {
    try {
      config fresh = load_config_file(old->file);
      // Where the bus lives cannot move under live participants.
      if (fresh.domain != source_domain_ || fresh.runtime_dir != source_runtime_dir_)
        log_line(log_level::warn, old->file.string() + ": domain and runtime_dir take effect at the next start; "
                                  "this process stays on domain '" + domain + "'");
      const std::string file_domain = fresh.domain;
      const std::filesystem::path file_runtime_dir = fresh.runtime_dir;
      fresh.domain = domain;
      fresh.runtime_dir = runtime_dir;
      const std::size_t rules = fresh.topics.size();
      set_config(std::move(fresh), file_domain, file_runtime_dir);
      log_line(log_level::info, "configuration reloaded from " + old->file.string() + " (" + std::to_string(rules) +
                                    " topic rule(s)); it applies to publishers and subscribers created from now on");
    } catch (const std::exception& e) {  // config_error; anything else must not take the process down either
      ec = make_error_code(errc::config_error);
      message = e.what();
    }
  }
  if (ec) log_line(log_level::error, "configuration not reloaded, the one in force stays: " + message);
  reload_handler handler;
  {
    std::lock_guard lock(config_mutex_);
    handler = on_reload_;
  }
  if (handler) handler(ec, message);
  return ec;
}

}  // namespace detail

// ---- Bus ----------------------------------------------------------------------

// How a stop request reaches run_until_signal: a SIGINT/SIGTERM through Asio's
// signal_set (handled on the io thread), or shutdown() from any thread. SIGHUP
// goes the same way to `on_hangup` (a configuration reload).
struct Bus::shutdown_signal {
  std::mutex mutex;
  std::condition_variable cv;
  int signal = 0;
  bool requested = false;
  std::shared_ptr<asio::signal_set> signals;
  std::shared_ptr<asio::signal_set> hangups;
  std::function<void()> on_hangup;  // set before signals are caught, then only read

  void request(int number) {
    std::lock_guard lock(mutex);
    if (!requested) signal = number;
    requested = true;
    cv.notify_all();
  }
  // Catches SIGINT/SIGTERM from now on; the first one requests the stop.
  void catch_signals(asio::io_context& io) {
    std::lock_guard lock(mutex);
    if (signals) return;
    signals = std::make_shared<asio::signal_set>(io, SIGINT, SIGTERM);
    signals->async_wait([this, keep = signals](const boost::system::error_code& ec, int number) {
      if (!ec) request(number);
    });
    hangups = std::make_shared<asio::signal_set>(io, SIGHUP);
    wait_hangup(hangups, on_hangup);
  }
  // Every SIGHUP until the set is cancelled; signals that arrive during a
  // reload are merged by Asio into one more handler call.
  static void wait_hangup(const std::shared_ptr<asio::signal_set>& set, std::function<void()> on_hangup) {
    set->async_wait([set, on_hangup](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (on_hangup) on_hangup();
      wait_hangup(set, on_hangup);
    });
  }
  void release_signals() {
    std::lock_guard lock(mutex);
    if (!signals) return;
    boost::system::error_code ignored;
    for (auto* set : {&signals, &hangups}) {
      (*set)->cancel(ignored);
      (*set)->clear(ignored);
      set->reset();
    }
  }
};

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// A stable id of this bus (host and domain) for loop prevention across
// bridges. The domain is part of it: two domains on one host are two buses
// that bridges may join, and must tell apart.
std::uint64_t host_identity(const std::string& domain) {
  std::ifstream in("/etc/machine-id");
  std::string id;
  in >> id;
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : (id.empty() ? host_name() : id) + "/" + domain)
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h ? h : 1;
}

}  // namespace

Bus::Bus() : Bus(bus_options{}) {}

Bus::Bus(bus_options options) { start(nullptr, std::move(options)); }

Bus::Bus(asio::io_context& io, bus_options options) { start(&io, std::move(options)); }

void Bus::start(asio::io_context* external, bus_options options) {
  // A reader that vanished must surface as EPIPE on that one link, never kill the process.
  ::signal(SIGPIPE, SIG_IGN);
  state_ = std::make_shared<detail::bus_state>();
  config cfg = options.cfg ? std::move(*options.cfg) : load_config_from_environment();
  const std::string source_domain = cfg.domain;
  const std::filesystem::path source_runtime_dir = cfg.runtime_dir;
  if (!options.domain.empty()) cfg.domain = options.domain;
  if (!options.runtime_dir.empty()) cfg.runtime_dir = options.runtime_dir;
  std::string why;
  if (validate_topic(cfg.domain, &why) || cfg.domain.find('/') != std::string::npos)
    throw config_error("domain '" + cfg.domain + "' must be one name of [A-Za-z0-9_.-]");
  std::error_code ec;
  state_->domain_dir = ensure_domain_dir(cfg, ec);
  throw_if(ec, "runtime directory " + domain_dir_of(cfg).string() +
                   (ec == std::errc::operation_not_permitted && !cfg.security.group.empty()
                        ? " (giving it to group '" + cfg.security.group + "' needs membership of that group)"
                        : ""));
  state_->domain = cfg.domain;
  state_->runtime_dir = cfg.runtime_dir;
  state_->set_config(std::move(cfg), source_domain, source_runtime_dir);
  state_->host = host_name();
  state_->host_id = host_identity(state_->domain);
#if IPCBUS_HAVE_SOCKET
  transport::socket::register_unix(state_->transports);
  transport::socket::register_tcp(state_->transports);
#endif
#if IPCBUS_HAVE_SHM
  transport::shm::register_shm(state_->transports);
#endif
#if IPCBUS_HAVE_PIPE
  transport::pipe::register_pipe(state_->transports);
#endif
#if IPCBUS_HAVE_MQUEUE
  transport::mqueue::register_mqueue(state_->transports);
#endif
  // Stale entries of crashed processes would only cost failed connects: reclaim them now.
  reclaim_stale(state_->domain_dir);
  shutdown_signal_ = std::make_shared<shutdown_signal>();
  shutdown_signal_->on_hangup = [weak = std::weak_ptr<detail::bus_state>(state_)] {
    std::string ignored;  // reload_config logs the outcome
    if (auto state = weak.lock()) state->reload_config(ignored);
  };
  if (external) {
    state_->io = external;
    if (options.handle_signals) shutdown_signal_->catch_signals(*state_->io);
    return;
  }
  state_->owned_io = std::make_unique<asio::io_context>(1);
  state_->io = state_->owned_io.get();
  // Asio's signal_set turns SIGINT/SIGTERM into a handler on the io thread, whichever
  // thread the kernel picked to deliver them; no user thread ever runs signal code.
  if (options.handle_signals) shutdown_signal_->catch_signals(*state_->io);
  thread_ = std::thread([state = state_.get()] { state->run_io(); });
}

Bus::~Bus() { shutdown(); }

config Bus::configuration() const { return *state_->current_config(); }
const std::string& Bus::domain() const { return state_->domain; }

void Bus::reload_config() {
  std::string message;
  if (const auto ec = state_->reload_config(message)) {
    if (ec == errc::config_error) throw config_error(message);
    throw std::system_error(ec, "reload_config: " + message);
  }
}

void Bus::reload_config(std::error_code& ec) {
  std::string message;
  ec = state_->reload_config(message);
}

void Bus::on_config_reload(std::function<void(const std::error_code&, const std::string&)> handler) {
  state_->set_reload_handler(std::move(handler));
}

const std::filesystem::path& Bus::domain_directory() const { return state_->domain_dir; }
asio::io_context& Bus::io_context() { return *state_->io; }

int Bus::wait_for_stop() {
  auto sig = shutdown_signal_;
  sig->catch_signals(*state_->io);
  std::unique_lock lock(sig->mutex);
  sig->cv.wait(lock, [&] { return sig->requested; });
  return sig->signal;
}

// The drain is read once the stop is requested: a reload meanwhile may have changed it.
int Bus::run_until_signal() {
  const int number = wait_for_stop();
  shutdown();
  return number;
}

int Bus::run_until_signal(std::chrono::milliseconds drain) {
  const int number = wait_for_stop();
  shutdown(drain);
  return number;
}

std::string Bus::describe_failure(std::string_view what, std::string_view name, std::error_code ec) {
  std::string why;
  if (ec == errc::invalid_topic) {
    if (what == "advertise") validate_topic(name, &why);
    else validate_pattern(name, &why);
  }
  return std::string(what) + " '" + std::string(name).substr(0, 80) + "'" + (why.empty() ? "" : ": " + why);
}

void Bus::shutdown() {
  if (state_) shutdown(state_->current_config()->shutdown.drain);
}

void Bus::shutdown(std::chrono::milliseconds drain) {
  if (!state_ || state_->closed.exchange(true)) return;
  shutdown_signal_->request(0);
  std::vector<std::shared_ptr<detail::publisher_core>> pubs;
  std::vector<std::shared_ptr<detail::subscriber_core>> subs;
  {
    std::lock_guard lock(state_->subscribers_mutex);
    for (auto& w : state_->publishers)
      if (auto p = w.lock()) pubs.push_back(std::move(p));
    for (auto& w : state_->subscribers)
      if (auto s = w.lock()) subs.push_back(std::move(s));
  }
  for (auto& p : pubs) p->close(drain);  // drains first: subscribers elsewhere still read
  for (auto& s : subs) s->close();
  asio::post(*state_->io, [state = state_] { state->stop_discovery(); });
  if (thread_.joinable()) {
    // Let the posted closes run, then stop.
    asio::post(*state_->io, [io = state_->io] { io->stop(); });
    thread_.join();
    // Run what was posted after the stop (link closes): nothing may keep the state alive.
    state_->io->restart();
    state_->io->poll();
  }
  shutdown_signal_->release_signals();  // the default actions apply again
}

}  // namespace ipcbus
