// shm:// — the backend: the publisher endpoint around ring_publisher, the
// connector around ring_reader/shm_link, and registration.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/transports/shm.hpp"
#include "shm_link.hpp"
#include "shm_publisher.hpp"
#include "shm_wake.hpp"

namespace ipcbus::transport::shm {
namespace {

namespace asio = boost::asio;

// Housekeeping period: dead subscribers are evicted and side segments released
// at least this often, even when nothing is published.
constexpr auto maintain_interval = std::chrono::milliseconds(100);

class shm_endpoint final : public publisher_endpoint {
 public:
  shm_endpoint(asio::io_context& io, const endpoint_options& options)
      : state_(std::make_shared<ring_publisher>(options)),
        timer_(std::make_shared<asio::steady_timer>(io)),
        wake_(std::make_shared<wake_listener>(io, state_)) {}
  ~shm_endpoint() override { close(); }

  std::error_code open() {
    if (auto ec = state_->open()) return ec;
    schedule(state_, timer_);
    // Without it subscribers are woken through the futex and a thread of their own.
    if (auto ec = wake_->open(state_->name()))
      log_line(log_level::warn, "topic '" + state_->topic() + "': no wake socket (" + ec.message() +
                                    "); sleeping subscribers will be woken less directly");
    return {};
  }

  std::string uri() const override { return "shm://" + state_->name(); }
  std::error_code send(const frame_ptr& frame) override { return state_->send(frame); }
  bool writes_in_place() const override { return true; }
  std::error_code reserve(std::size_t size, std::uint64_t sequence, frame_slot& out) override {
    return state_->reserve(size, sequence, out);
  }
  std::error_code commit(frame_slot&) override { return state_->commit_reserved(); }
  void cancel(frame_slot&) override { state_->cancel_reserved(); }
  std::error_code write_frame(std::size_t size, std::uint64_t sequence, frame_writer_ref write) override {
    // A side segment, or a copy too long to make under the ring's lock: in two steps.
    if (!state_->written_in_one_hold(size)) return publisher_endpoint::write_frame(size, sequence, write);
    return state_->write_frame(size, sequence, write);
  }
  void begin_batch() override { state_->begin_batch(); }
  void end_batch() override { state_->end_batch(); }
  std::size_t subscriber_count() const override { return state_->subscriber_count(); }
  bool flush(std::chrono::milliseconds timeout) override { return state_->flush(timeout); }
  endpoint_counters counters() const override { return state_->counters(); }
  std::uint64_t counters_version() const override { return state_->counters_version(); }

  void close() override {
    state_->close();
    wake_->close();
    // Timers belong to the io thread; close() may be called from any thread.
    asio::post(timer_->get_executor(), [t = timer_] { t->cancel(); });
  }

 private:
  static void schedule(std::weak_ptr<ring_publisher> weak, std::shared_ptr<asio::steady_timer> timer) {
    timer->expires_after(maintain_interval);
    timer->async_wait([weak, timer](const boost::system::error_code& ec) {
      if (ec) return;
      auto state = weak.lock();
      if (!state) return;
      state->maintain();
      schedule(state, timer);
    });
  }

  std::shared_ptr<ring_publisher> state_;
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<wake_listener> wake_;
};

// A link to a ring that failed validation at attach: reports that once, on the
// io thread, as links that fail later do, so the bus counts it and stops
// retrying this publisher.
class failed_link final : public subscriber_link {
 public:
  failed_link(asio::io_context& io, link_callbacks callbacks, std::error_code ec, std::string why)
      : live_(std::make_shared<bool>(true)) {
    asio::post(io, [live = live_, cb = std::move(callbacks), ec, why = std::move(why)] {
      if (*live && cb.on_closed) cb.on_closed(ec, why);
    });
  }
  ~failed_link() override { *live_ = false; }
  void pause() override {}
  void resume() override {}
  void close() override { *live_ = false; }

 private:
  std::shared_ptr<bool> live_;
};

class shm_transport final : public transport_backend {
 public:
  std::string_view scheme() const override { return "shm"; }

  std::unique_ptr<publisher_endpoint> listen(asio::io_context& io, const endpoint_options& options,
                                             std::error_code& ec) override {
    // Segments of publishers that died since the last look: cheaper to drop now
    // than to let /dev/shm fill up.
    reclaim_shm_segments(options.domain_dir);
    auto ep = std::make_unique<shm_endpoint>(io, options);
    ec = ep->open();
    if (ec) {
      log_line(log_level::error, "topic '" + options.topic + "': cannot create its shared memory ring: " + ec.message());
      return nullptr;
    }
    return ep;
  }

  std::unique_ptr<subscriber_link> connect(asio::io_context& io, const std::string& uri, const link_options& options,
                                           link_callbacks callbacks, std::error_code& ec) override {
    constexpr std::string_view scheme = "shm://";
    const std::string name = uri.starts_with(scheme) ? uri.substr(scheme.size()) : std::string{};
    if (!valid_ring_name(name)) {
      ec = make_error_code(errc::invalid_argument);
      return nullptr;
    }
    auto reader = std::make_unique<ring_reader>();
    std::string why;
    ec = reader->attach(name, options, why);
    if (ec == errc::malformed_frame) {
      ec.clear();
      return std::make_unique<failed_link>(io, std::move(callbacks), make_error_code(errc::malformed_frame), why);
    }
    if (ec) {
      if (ec == errc::would_block) log_line(log_level::warn, why);
      return nullptr;
    }
    auto state = std::make_shared<shm_link_state>(io, std::move(reader), std::move(callbacks), options, ec);
    if (ec) return nullptr;
    state->start();
    return std::make_unique<shm_link>(std::move(state));
  }
};

}  // namespace

void register_shm(transport_registry& registry) { registry.add(std::make_unique<shm_transport>()); }

}  // namespace ipcbus::transport::shm
