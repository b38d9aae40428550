// pipe:// — the backend: the publisher endpoint (attach FIFO + the shared
// frame_publisher), the subscriber link (data FIFO + the shared stream reader)
// and registration. Protocol and limits: transports/pipe/README.md.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio.hpp>

#include "frame_publisher.hpp"
#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/pipe.hpp"
#include "pipe_names.hpp"
#include "stream_link.hpp"

namespace ipcbus::transport::pipe {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using stream::frame_publisher;
using stream::stream_link_state;

// How often a publisher looks for data FIFOs whose subscriber died before it
// attached them (the only FIFOs nobody else removes while it lives).
constexpr auto sweep_interval = std::chrono::seconds(2);

std::error_code last_error() { return {errno, std::system_category()}; }

// True when the FIFO behind `fd` (a write end) has no reader left.
bool reader_gone(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

// Creates a FIFO (mode 0600, or 0660 for the sharing group) and opens it for
// reading and writing, without blocking: the holder never sees EOF when
// writers come and go.
int make_fifo(const fs::path& path, const security_settings& security, std::error_code& ec) {
  if (::mkfifo(path.c_str(), 0600) != 0) {
    ec = last_error();
    return -1;
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 || (ec = share_object(fd, security))) {
    if (fd < 0) ec = last_error();
    else ::close(fd);
    ::unlink(path.c_str());
    return -1;
  }
  ec.clear();
  return fd;
}

// The publisher's side of the attach FIFO: reads attach records and adopts the
// data FIFO each one names. Everything on the io thread.
class attach_listener : public std::enable_shared_from_this<attach_listener> {
 public:
  attach_listener(asio::io_context& io, std::shared_ptr<frame_publisher> publisher, fs::path path, int fd)
      : publisher_(std::move(publisher)), path_(std::move(path)), fifo_(io, fd), timer_(io) {}

  void start() {
    read_more();
    schedule_sweep();
  }

  void close() {
    boost::system::error_code ignored;
    fifo_.close(ignored);
    timer_.cancel();
  }

 private:
  void read_more() {
    fifo_.async_read_some(asio::buffer(buffer_.data() + used_, buffer_.size() - used_),
                          [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                            if (ec) return;  // closed
                            self->used_ += n;
                            self->take_records();
                            self->read_more();
                          });
  }

  void take_records() {
    std::size_t at = 0;
    while (used_ - at >= attach_record_size) {
      const auto record = decode_attach(buffer_.data() + at);
      if (!record) {
        // Records are written whole (atomically), so anything else is someone
        // writing garbage: skip a byte at a time until a record starts again,
        // so that real subscribers' records after the garbage still count.
        // One warning and one count per run of garbage.
        if (!in_garbage_) {
          log_line(log_level::warn, "topic '" + publisher_->options().topic + "': garbage in attach FIFO " +
                                        path_.string() + "; skipped");
          publisher_->count_refused();
          in_garbage_ = true;
        }
        ++at;
        continue;
      }
      in_garbage_ = false;
      adopt(*record);
      at += attach_record_size;
    }
    std::memmove(buffer_.data(), buffer_.data() + at, used_ - at);
    used_ -= at;
  }

  void adopt(const attach_record& r) {
    const auto& o = publisher_->options();
    const fs::path data = data_fifo_path(o.domain_dir, o.publisher_id, r.link_id);
    const int fd = ::open(data.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      // ENXIO: nobody reads it any more (the subscriber died or left already).
      if (errno == ENXIO) ::unlink(data.c_str());
      log_line(log_level::debug, "topic '" + o.topic + "': cannot attach " + data.string() + ": " +
                                     std::strerror(errno));
      return;
    }
    std::string why;
    if (!fifo_owner_allowed(fd, o.security, why)) {
      log_line(log_level::warn, "topic '" + o.topic + "': refused subscriber FIFO " + data.string() + " (" + why + ")");
      publisher_->count_refused();
      ::close(fd);
      return;
    }
    publisher_->add_subscriber(stream::make_fifo_sink(data.string()), fd);
  }

  void schedule_sweep() {
    timer_.expires_after(sweep_interval);
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      self->sweep();
      self->schedule_sweep();
    });
  }

  // Data FIFOs of this publisher that nobody reads: their subscriber died
  // between creating the FIFO and our attaching it.
  void sweep() {
    const auto& o = publisher_->options();
    const std::string prefix = id_to_hex(o.publisher_id) + ".";
    for (const auto& path : reclaim_orphaned_fifos(o.domain_dir, true))
      if (path.filename().string().starts_with(prefix) && path.extension() == ".fifo") ::unlink(path.c_str());
  }

  std::shared_ptr<frame_publisher> publisher_;
  fs::path path_;
  asio::posix::stream_descriptor fifo_;
  asio::steady_timer timer_;
  std::array<char, 64 * attach_record_size> buffer_{};
  std::size_t used_ = 0;
  bool in_garbage_ = false;
};

class pipe_endpoint final : public publisher_endpoint {
 public:
  pipe_endpoint(asio::io_context& io, const endpoint_options& options)
      : io_(io), state_(std::make_shared<frame_publisher>(io, options)) {}
  ~pipe_endpoint() override { close(); }

  std::error_code open() {
    const auto& o = state_->options();
    path_ = attach_fifo_path(o.domain_dir, o.publisher_id);
    std::error_code ec;
    const int fd = make_fifo(path_, o.security, ec);
    if (fd < 0) return ec;
    listener_ = std::make_shared<attach_listener>(io_, state_, path_, fd);
    asio::post(io_, [l = listener_] { l->start(); });
    return {};
  }

  std::string uri() const override { return "pipe://" + path_.string(); }
  std::error_code send(const frame_ptr& frame) override { return state_->send(frame); }
  std::size_t subscriber_count() const override { return state_->subscriber_count(); }
  bool flush(std::chrono::milliseconds timeout) override { return state_->flush(timeout); }
  endpoint_counters counters() const override { return state_->counters(); }
  std::uint64_t counters_version() const override { return state_->counters_version(); }

  // Subscribers learn of it from POLLERR on their attach FIFO write ends once
  // the FIFO's only reader (us) has closed it.
  void close() override {
    if (closed_) return;
    closed_ = true;
    state_->close_all();
    if (listener_) {
      ::unlink(path_.c_str());
      asio::post(io_, [l = listener_] { l->close(); });
    }
  }

 private:
  asio::io_context& io_;
  std::shared_ptr<frame_publisher> state_;
  std::shared_ptr<attach_listener> listener_;
  fs::path path_;
  bool closed_ = false;
};

// The subscriber's link: its data FIFO read as a stream, and its write end of
// the publisher's attach FIFO, which reports POLLERR once the publisher is gone.
class pipe_link final : public subscriber_link {
 public:
  pipe_link(std::shared_ptr<stream_link_state> link, std::shared_ptr<asio::posix::stream_descriptor> attach,
            fs::path data_path)
      : link_(std::move(link)), attach_(std::move(attach)), data_path_(std::move(data_path)) {}
  ~pipe_link() override { close(); }

  void start() {
    link_->start();
    watch(link_, attach_);
    // The wait is not speculative: a publisher gone before it was queued is seen here.
    if (reader_gone(attach_->native_handle()))
      asio::post(attach_->get_executor(), [l = link_] { l->peer_closed(); });
  }

  void pause() override { link_->pause(); }
  void resume() override { link_->resume(); }
  void close() override {
    if (closed_) return;
    closed_ = true;
    link_->close();  // the publisher's write end reports POLLERR: it drops us and unlinks the FIFO
    boost::system::error_code ignored;
    attach_->close(ignored);
    ::unlink(data_path_.c_str());
  }

 private:
  static void watch(std::shared_ptr<stream_link_state> link, std::shared_ptr<asio::posix::stream_descriptor> attach) {
    attach->async_wait(asio::posix::descriptor_base::wait_error,
                       [link, attach](const boost::system::error_code& ec) {
                         if (ec == asio::error::operation_aborted || link->closed()) return;
                         if (ec || reader_gone(attach->native_handle())) link->peer_closed();
                         else watch(link, attach);
                       });
  }

  std::shared_ptr<stream_link_state> link_;
  std::shared_ptr<asio::posix::stream_descriptor> attach_;
  fs::path data_path_;
  bool closed_ = false;
};

class pipe_transport final : public transport_backend {
 public:
  std::string_view scheme() const override { return "pipe"; }

  std::unique_ptr<publisher_endpoint> listen(asio::io_context& io, const endpoint_options& options,
                                             std::error_code& ec) override {
    auto ep = std::make_unique<pipe_endpoint>(io, options);
    ec = ep->open();
    if (ec) {
      log_line(log_level::error, "topic '" + options.topic + "': cannot create its attach FIFO in " +
                                     options.domain_dir.string() + ": " + ec.message());
      return nullptr;
    }
    return ep;
  }

  std::unique_ptr<subscriber_link> connect(asio::io_context& io, const std::string& uri, const link_options& options,
                                           link_callbacks callbacks, std::error_code& ec) override {
    const auto target = parse_uri(uri);
    if (!target) {
      ec = make_error_code(errc::invalid_argument);
      return nullptr;
    }
    // The publisher's attach FIFO first: if it is gone there is nothing to make.
    const int attach_fd = ::open(target->attach_fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (attach_fd < 0) {
      ec = errno == ENXIO || errno == ENOENT ? make_error_code(errc::peer_gone) : last_error();
      return nullptr;
    }
    auto attach = std::make_shared<asio::posix::stream_descriptor>(io, attach_fd);
    std::string why;
    if (!fifo_owner_allowed(attach_fd, options.security, why)) {
      log_line(log_level::warn, "refused publisher at " + uri + " (" + why + ")");
      ec = make_error_code(errc::access_denied);
      return nullptr;
    }
    const std::uint64_t link_id = random_id();
    const fs::path data = data_fifo_path(target->domain_dir, target->publisher_id, link_id);
    const int data_fd = make_fifo(data, options.security, ec);
    if (data_fd < 0) return nullptr;
    auto link = std::make_shared<stream_link_state>(asio::posix::stream_descriptor(io, data_fd), options,
                                                    std::move(callbacks));
    const auto record = encode_attach({link_id, static_cast<std::uint32_t>(::getpid())});
    ssize_t n = -1;
    do {
      n = ::write(attach_fd, record.data(), record.size());
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(record.size())) {
      // EAGAIN: the attach FIFO is full (a later scan retries); EPIPE: the publisher just went.
      ec = n < 0 && errno == EAGAIN ? make_error_code(errc::would_block) : make_error_code(errc::peer_gone);
      link->close();
      ::unlink(data.c_str());
      return nullptr;
    }
    auto result = std::make_unique<pipe_link>(std::move(link), std::move(attach), data);
    result->start();
    ec.clear();
    return result;
  }
};

}  // namespace

void register_pipe(transport_registry& registry) { registry.add(std::make_unique<pipe_transport>()); }

}  // namespace ipcbus::transport::pipe
