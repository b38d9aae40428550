// Direct wake-ups of sleeping shm:// subscribers (README.md "Waking").
//
// A subscriber's io thread sleeps in epoll (Asio), not on the ring's futex. To
// be woken with one system call instead of two (futex -> waker thread ->
// eventfd -> io thread), the subscriber hands its eventfd to the publisher:
// it connects to the publisher's wake socket (an abstract unix seqpacket
// socket named after the ring, so no file is left behind by a crash) and sends
// {slot, slot state} with the descriptor attached (SCM_RIGHTS). The publisher
// checks the peer's credentials against the slot (same uid, the slot's pid),
// checks that the descriptor is an eventfd, keeps it for that slot and answers
// with one byte. From then on the subscriber marks its slot `waiting_eventfd`
// before it sleeps, and the publisher writes the eventfd instead of calling
// FUTEX_WAKE.
//
// The connection stays open as a liveness signal both ways: the publisher
// forgets the descriptor when the subscriber's end closes, and the subscriber
// learns at once that a killed publisher is gone.
//
// Thread-safety: wake_listener runs on the publisher's io thread; close() may
// be called from any thread.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <system_error>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace ipcbus::transport::shm {

class ring_publisher;

// What a subscriber sends, with its eventfd attached.
struct wake_request {
  std::uint32_t magic;  // wake_magic
  std::uint32_t slot;   // index in the ring's slot table
  std::uint64_t state;  // the slot's state word as the subscriber set it
};
inline constexpr std::uint32_t wake_magic = 0x454b4157;  // "WAKE"
inline constexpr char wake_ack = 'k';

// Reader side: connects to the wake socket of `ring` and sends the request
// with `event_fd`. Returns the connected, non-blocking socket; the answer (one
// byte) arrives later. Refuses a socket not bound by `owner_pid` under our
// uid. Errors: the system error of socket/connect/sendmsg, access_denied.
int request_wake(const std::string& ring, std::uint32_t owner_pid, const wake_request& request, int event_fd,
                 std::error_code& ec);

// Publisher side: accepts wake requests for `publisher`'s ring and serves them.
class wake_listener : public std::enable_shared_from_this<wake_listener> {
 public:
  wake_listener(boost::asio::io_context& io, std::weak_ptr<ring_publisher> publisher);
  ~wake_listener();
  wake_listener(const wake_listener&) = delete;
  wake_listener& operator=(const wake_listener&) = delete;

  // Binds the wake socket of `ring` and starts accepting.
  // Errors: the system error of socket/bind/listen (readers then use the futex).
  std::error_code open(const std::string& ring);
  // Stops accepting and closes every connection (subscribers see EOF). Any thread.
  void close();

 private:
  struct connection {
    explicit connection(boost::asio::io_context& io) : socket(io) {}
    boost::asio::posix::stream_descriptor socket;
    std::uint32_t slot = 0;
    std::uint64_t token = 0;  // the publisher's registration (0: none); it owns the eventfd
  };
  using conn_iter = std::list<connection>::iterator;

  void accept_next();
  void accept_ready();
  void wait_request(conn_iter c);
  void on_request(conn_iter c);
  void wait_hangup(conn_iter c);
  void drop(conn_iter c);
  void close_now();

  boost::asio::io_context& io_;
  std::weak_ptr<ring_publisher> publisher_;
  boost::asio::posix::stream_descriptor acceptor_;
  std::list<connection> connections_;
  bool closed_ = false;
};

}  // namespace ipcbus::transport::shm
