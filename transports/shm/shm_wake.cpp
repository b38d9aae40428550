#include "shm_wake.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include <boost/asio/post.hpp>

#include "ipcbus/error.hpp"
#include "shm_publisher.hpp"

namespace ipcbus::transport::shm {

namespace asio = boost::asio;

namespace {

// More connections than slots only come from a misbehaving process: refused.
constexpr std::size_t max_connections = 2 * layout::slot_count;

// "\0ipcbus-wake" + ring name, in the abstract namespace: nothing on disk.
socklen_t wake_address(const std::string& ring, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  const std::string name = "ipcbus-wake" + ring;
  const std::size_t n = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

std::error_code last_error() { return {errno, std::system_category()}; }

bool peer_credentials(int fd, ucred& cred) {
  socklen_t len = sizeof cred;
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof cred;
}

// A descriptor another process handed us is written to with the ring lock
// held: it must be an eventfd (a pipe could block or raise SIGPIPE), and
// non-blocking (a counter pushed near its limit by its owner must not block us).
bool usable_eventfd(int fd) {
  std::array<char, 64> link{};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(path.c_str(), link.data(), link.size() - 1);
  if (n <= 0 || std::string_view(link.data(), static_cast<std::size_t>(n)) != "anon_inode:[eventfd]") return false;
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

}  // namespace

int request_wake(const std::string& ring, std::uint32_t owner_pid, const wake_request& request, int event_fd,
                 std::error_code& ec) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ec = last_error();
    return -1;
  }
  sockaddr_un addr;
  const socklen_t len = wake_address(ring, addr);
  // connect() on a unix socket completes at once or fails (EAGAIN: backlog full).
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    ec = last_error();
    ::close(fd);
    return -1;
  }
  // Anyone may bind an abstract name: hand our descriptor only to the ring's owner.
  ucred cred{};
  if (!peer_credentials(fd, cred) || cred.uid != ::geteuid() || static_cast<std::uint32_t>(cred.pid) != owner_pid) {
    ec = make_error_code(errc::access_denied);
    ::close(fd);
    return -1;
  }
  iovec iov{const_cast<wake_request*>(&request), sizeof request};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &event_fd, sizeof(int));
  ssize_t sent = -1;
  do {
    sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof request)) {
    ec = last_error();
    ::close(fd);
    return -1;
  }
  return fd;
}

wake_listener::wake_listener(asio::io_context& io, std::weak_ptr<ring_publisher> publisher)
    : io_(io), publisher_(std::move(publisher)), acceptor_(io) {}

wake_listener::~wake_listener() { close_now(); }

std::error_code wake_listener::open(const std::string& ring) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return last_error();
  sockaddr_un addr;
  const socklen_t len = wake_address(ring, addr);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0 || ::listen(fd, 64) != 0) {
    const auto ec = last_error();
    ::close(fd);
    return ec;
  }
  acceptor_.assign(fd);
  accept_next();
  return {};
}

void wake_listener::close() {
  asio::post(io_, [self = shared_from_this()] { self->close_now(); });
}

void wake_listener::close_now() {
  closed_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  while (!connections_.empty()) drop(connections_.begin());
}

void wake_listener::accept_next() {
  acceptor_.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (ec || self->closed_) return;
                         self->accept_ready();
                         self->accept_next();
                       });
}

void wake_listener::accept_ready() {
  for (;;) {
    const int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) return;  // EAGAIN, or an error the next readiness reports again
    if (connections_.size() >= max_connections) {
      ::close(fd);
      continue;
    }
    connections_.emplace_back(io_);
    const auto c = std::prev(connections_.end());
    c->socket.assign(fd);
    wait_request(c);
  }
}

void wake_listener::wait_request(conn_iter c) {
  c->socket.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this(), c](const boost::system::error_code& ec) {
                         if (ec || self->closed_) return;  // aborted: `c` may be gone
                         self->on_request(c);
                       });
}

// One message, exactly a wake_request with one descriptor; anything else ends
// the connection (the subscriber then keeps using the futex).
void wake_listener::on_request(conn_iter c) {
  wake_request req{};
  iovec iov{&req, sizeof req};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 4)> control{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  const ssize_t n = ::recvmsg(c->socket.native_handle(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    wait_request(c);
    return;
  }
  // Every descriptor that came along is ours to close, unless it is kept.
  int event_fd = -1;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
      if (event_fd < 0) event_fd = fd;
      else ::close(fd);
    }
  }
  ucred cred{};
  const bool valid = n == static_cast<ssize_t>(sizeof req) && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 &&
                     req.magic == wake_magic && req.slot < layout::slot_count && event_fd >= 0 &&
                     peer_credentials(c->socket.native_handle(), cred) && cred.uid == ::geteuid() &&
                     usable_eventfd(event_fd);
  const auto publisher = publisher_.lock();
  const std::uint64_t token =
      valid && publisher ? publisher->add_wake_target(req.slot, req.state, static_cast<std::uint32_t>(cred.pid), event_fd)
                         : 0;
  if (token == 0) {
    if (event_fd >= 0) ::close(event_fd);
    drop(c);
    return;
  }
  c->slot = req.slot;
  c->token = token;
  if (::send(c->socket.native_handle(), &wake_ack, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
    drop(c);
    return;
  }
  wait_hangup(c);
}

// Nothing more is expected: readable means the subscriber closed its end.
void wake_listener::wait_hangup(conn_iter c) {
  c->socket.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this(), c](const boost::system::error_code& ec) {
                         if (ec || self->closed_) return;
                         self->drop(c);
                       });
}

void wake_listener::drop(conn_iter c) {
  if (c->token != 0) {
    if (const auto publisher = publisher_.lock()) publisher->remove_wake_target(c->slot, c->token);
  }
  boost::system::error_code ignored;
  c->socket.close(ignored);
  connections_.erase(c);
}

}  // namespace ipcbus::transport::shm
