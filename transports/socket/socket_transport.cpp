// unix:// and tcp:// — the acceptors and connectors around the shared stream code
// (transports/stream/).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fcntl.h>
#include <unistd.h>

#include <charconv>

#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/socket.hpp"
#include "frame_publisher.hpp"
#include "stream_link.hpp"

namespace ipcbus::transport::socket {
namespace {

namespace asio = boost::asio;
using stream::frame_publisher;
using stream::stream_link;
using stream::stream_link_state;
using asio::local::stream_protocol;
using asio::ip::tcp;

std::error_code to_std(const boost::system::error_code& ec) {
  return {ec.value(), std::system_category()};
}

// Listens with any Asio acceptor and hands vetted sockets to the shared state.
template <class Protocol>
class stream_endpoint final : public publisher_endpoint {
 public:
  stream_endpoint(asio::io_context& io, const endpoint_options& options, bool check_credentials)
      : state_(std::make_shared<frame_publisher>(io, options)),
        acceptor_(std::make_shared<typename Protocol::acceptor>(io)),
        check_credentials_(check_credentials) {}
  ~stream_endpoint() override { close(); }

  std::error_code open(const typename Protocol::endpoint& ep, std::string path) {
    boost::system::error_code ec;
    acceptor_->open(ep.protocol(), ec);
    if (!ec) acceptor_->bind(ep, ec);
    if (!ec && !path.empty()) {
      // Owner only (or the sharing group): connecting needs write permission. Peers are vetted anyway.
      if (auto err = share_path(path, state_->options().security)) {
        acceptor_->close(ec);
        return err;
      }
    }
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return to_std(ec);
    if constexpr (std::is_same_v<Protocol, tcp>) {
      const auto local = acceptor_->local_endpoint();
      uri_ = "tcp://" + local.address().to_string() + ":" + std::to_string(local.port());
    } else {
      uri_ = "unix://" + path;
    }
    path_ = std::move(path);
    accept(state_, acceptor_, check_credentials_);
    return {};
  }

  std::string uri() const override { return uri_; }
  std::error_code send(const frame_ptr& frame) override { return state_->send(frame); }
  std::size_t subscriber_count() const override { return state_->subscriber_count(); }
  bool flush(std::chrono::milliseconds timeout) override { return state_->flush(timeout); }
  endpoint_counters counters() const override { return state_->counters(); }
  std::uint64_t counters_version() const override { return state_->counters_version(); }

  void close() override {
    if (closed_) return;
    closed_ = true;
    state_->close_all();
    if (!path_.empty()) ::unlink(path_.c_str());
    asio::post(acceptor_->get_executor(), [a = acceptor_] {
      boost::system::error_code ignored;
      a->close(ignored);
    });
  }

 private:
  // Keeps accepting after errors such as EMFILE, after a pause so that a
  // persistent error does not spin: the peers already attached are still served.
  static void accept(std::shared_ptr<frame_publisher> state,
                     std::shared_ptr<typename Protocol::acceptor> acceptor, bool check) {
    acceptor->async_accept([state, acceptor, check](const boost::system::error_code& ec,
                                                    typename Protocol::socket s) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        adopt(*state, std::move(s), check);
        accept(state, acceptor, check);
        return;
      }
      log_line(log_level::warn, "topic '" + state->options().topic + "': accept failed: " + ec.message());
      auto timer = std::make_shared<asio::steady_timer>(acceptor->get_executor(), std::chrono::milliseconds(100));
      timer->async_wait([state, acceptor, check, timer](const boost::system::error_code&) {
        if (acceptor->is_open()) accept(state, acceptor, check);
      });
    });
  }

  static void adopt(frame_publisher& state, typename Protocol::socket s, bool check) {
    std::string who;
    if (check && !peer_allowed(s.native_handle(), state.options().security, who)) {
      log_line(log_level::warn, "topic '" + state.options().topic + "': refused subscriber (" +
                                    who + "): not an allowed uid/gid");
      state.count_refused();
      return;
    }
    if constexpr (std::is_same_v<Protocol, tcp>) {
      boost::system::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
    }
    boost::system::error_code ec;
    const int fd = s.release(ec);
    if (!ec) state.add_subscriber(stream::make_socket_sink(), fd);
  }

  std::shared_ptr<frame_publisher> state_;
  std::shared_ptr<typename Protocol::acceptor> acceptor_;
  bool check_credentials_;
  std::string uri_;
  std::string path_;
  bool closed_ = false;
};

// sockaddr_un holds at most 107 bytes of path. Deep runtime directories are
// common (containers, test trees), so a longer path is reached through
// /proc/self/fd/<dir fd>/<name>, which the kernel resolves like the real path.
class socket_path {
 public:
  explicit socket_path(const std::string& path) {
    if (path.size() < sizeof(sockaddr_un::sun_path)) {
      usable_ = path;
      return;
    }
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) return;
    dir_fd_ = ::open(path.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd_ < 0) return;
    const std::string alias = "/proc/self/fd/" + std::to_string(dir_fd_) + path.substr(slash);
    if (alias.size() < sizeof(sockaddr_un::sun_path)) usable_ = alias;
  }
  ~socket_path() {
    if (dir_fd_ >= 0) ::close(dir_fd_);
  }
  socket_path(const socket_path&) = delete;
  socket_path& operator=(const socket_path&) = delete;
  // Empty when the path cannot be reached within the limit.
  const std::string& usable() const { return usable_; }

 private:
  int dir_fd_ = -1;
  std::string usable_;
};

// Reads the connected socket `fd` (owned from now on) as a stream link.
std::unique_ptr<subscriber_link> start_link(asio::io_context& io, int fd, const link_options& options,
                                            link_callbacks callbacks) {
  auto state = std::make_shared<stream_link_state>(asio::posix::stream_descriptor(io, fd), options,
                                                   std::move(callbacks));
  state->start();
  return std::make_unique<stream_link>(std::move(state));
}

class unix_transport final : public transport_backend {
 public:
  std::string_view scheme() const override { return "unix"; }

  std::unique_ptr<publisher_endpoint> listen(asio::io_context& io, const endpoint_options& options,
                                             std::error_code& ec) override {
    const std::string path = (options.domain_dir / (id_to_hex(options.publisher_id) + ".sock")).string();
    const socket_path bindable(path);
    if (bindable.usable().empty()) {
      ec = make_error_code(errc::invalid_argument);
      log_line(log_level::error, "cannot bind a unix socket at " + path + "; use a shorter runtime_dir");
      return nullptr;
    }
    auto ep = std::make_unique<stream_endpoint<stream_protocol>>(io, options, true);
    ec = ep->open(stream_protocol::endpoint(bindable.usable()), path);
    if (ec) return nullptr;
    return ep;
  }

  std::unique_ptr<subscriber_link> connect(asio::io_context& io, const std::string& uri,
                                           const link_options& options, link_callbacks callbacks,
                                           std::error_code& ec) override {
    const socket_path path(uri.substr(std::string_view("unix://").size()));
    if (path.usable().empty()) {
      ec = make_error_code(errc::invalid_argument);
      return nullptr;
    }
    stream_protocol::socket s(io);
    boost::system::error_code bec;
    s.connect(stream_protocol::endpoint(path.usable()), bec);
    if (bec) { ec = to_std(bec); return nullptr; }
    std::string who;
    if (!peer_allowed(s.native_handle(), options.security, who)) {
      log_line(log_level::warn, "refused publisher at " + uri + " (" + who + ")");
      ec = make_error_code(errc::access_denied);
      return nullptr;
    }
    const int fd = s.release(bec);
    if (bec) { ec = to_std(bec); return nullptr; }
    ec.clear();
    return start_link(io, fd, options, std::move(callbacks));
  }
};

class tcp_transport final : public transport_backend {
 public:
  std::string_view scheme() const override { return "tcp"; }

  std::unique_ptr<publisher_endpoint> listen(asio::io_context& io, const endpoint_options& options,
                                             std::error_code& ec) override {
    auto ep = std::make_unique<stream_endpoint<tcp>>(io, options, false);
    const tcp::endpoint where(asio::ip::address_v4::loopback(), 0);
    ec = ep->open(where, "");
    if (ec) return nullptr;
    return ep;
  }

  std::unique_ptr<subscriber_link> connect(asio::io_context& io, const std::string& uri,
                                           const link_options& options, link_callbacks callbacks,
                                           std::error_code& ec) override {
    tcp::endpoint ep;
    if (!parse(uri, ep)) { ec = make_error_code(errc::invalid_argument); return nullptr; }
    tcp::socket s(io);
    boost::system::error_code bec;
    s.connect(ep, bec);
    if (bec) { ec = to_std(bec); return nullptr; }
    s.set_option(tcp::no_delay(true), bec);
    const int fd = s.release(bec);
    if (bec) { ec = to_std(bec); return nullptr; }
    ec.clear();
    return start_link(io, fd, options, std::move(callbacks));
  }

  // "tcp://127.0.0.1:7447" or "tcp://[::1]:7447"
  static bool parse(const std::string& uri, tcp::endpoint& out) {
    std::string_view rest(uri);
    if (!rest.starts_with("tcp://")) return false;
    rest.remove_prefix(6);
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return false;
    std::string host(rest.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned port = 0;
    const auto port_text = rest.substr(colon + 1);
    const auto [p, err] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (err != std::errc{} || p != port_text.data() + port_text.size() || port == 0 || port > 65535) return false;
    boost::system::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (ec) return false;
    out = tcp::endpoint(addr, static_cast<unsigned short>(port));
    return true;
  }
};

}  // namespace

void register_unix(transport_registry& registry) { registry.add(std::make_unique<unix_transport>()); }
void register_tcp(transport_registry& registry) { registry.add(std::make_unique<tcp_transport>()); }

}  // namespace ipcbus::transport::socket
