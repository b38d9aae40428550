// mq:// — the backend: listen (mq_endpoint), connect (a queue of our own, an
// attach message, an mq_link) and registration. Protocol and limits:
// transports/mqueue/README.md.
#include <fcntl.h>
#include <mqueue.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/mqueue.hpp"
#include "mq_link.hpp"
#include "mq_publisher.hpp"

namespace ipcbus::transport::mqueue {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

constexpr long smallest_msgsize = 1024;
std::atomic<bool> shrink_warned{false};

std::error_code last_error() { return {errno, std::system_category()}; }

// Creates our queue: as many messages as msg_max allows, each as large as
// msgsize_max allows or the largest frame needs. When RLIMIT_MSGQUEUE is used
// up (EMFILE) the queue is made smaller, first in messages, then in message
// size (more fragments): slower, but it works. Returns the descriptor and the
// message size, or -1 and `ec`.
mqd_t create_queue(const std::string& name, const mq_limits& limits, std::uint64_t max_frame,
                   const security_settings& security, long& msgsize, std::error_code& ec) {
  mq_attr attr{};
  attr.mq_maxmsg = std::max<long>(1, limits.msg_max);
  attr.mq_msgsize = static_cast<long>(std::clamp<std::uint64_t>(max_frame + 5 + header_size,
                                                                std::min<long>(smallest_msgsize, limits.msgsize_max),
                                                                static_cast<std::uint64_t>(limits.msgsize_max)));
  for (;;) {
    const mqd_t fd = ::mq_open(name.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC, 0600, &attr);
    if (fd >= 0) {
      mq_attr got{};
      if (::mq_getattr(fd, &got) != 0 || share_object(fd, security)) {
        ec = last_error();
        ::mq_close(fd);
        ::mq_unlink(name.c_str());
        return -1;
      }
      msgsize = got.mq_msgsize;
      ec.clear();
      return fd;
    }
    ec = last_error();
    if (errno != EMFILE) return -1;
    if (attr.mq_maxmsg > 1) attr.mq_maxmsg /= 2;
    else if (attr.mq_msgsize > smallest_msgsize) attr.mq_msgsize = std::max(smallest_msgsize, attr.mq_msgsize / 2);
    else return -1;
    if (!shrink_warned.exchange(true))
      log_line(log_level::warn, "mq: RLIMIT_MSGQUEUE (" + std::to_string(limits.rlimit) +
                                    " bytes per user) is used up; making smaller queues (ulimit -q raises it)");
  }
}

bool queue_owner_allowed(int fd, const security_settings& security) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && owner_allowed(st, security);
}

class mq_transport final : public transport_backend {
 public:
  std::string_view scheme() const override { return "mq"; }

  std::unique_ptr<publisher_endpoint> listen(asio::io_context& io, const endpoint_options& options,
                                             std::error_code& ec) override {
    // Queues of processes that died since the last look: they count against
    // RLIMIT_MSGQUEUE and queues_max until someone unlinks them.
    reclaim_mq_queues(options.domain_dir);
    auto ep = std::make_unique<mq_endpoint>(io, options, read_mq_limits());
    ec = ep->open();
    if (ec) {
      log_line(log_level::error, "topic '" + options.topic + "': cannot create its message queue: " + ec.message());
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
    const mqd_t attach_fd = ::mq_open(target->queue.text().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (attach_fd < 0) {
      ec = errno == ENOENT ? make_error_code(errc::peer_gone) : last_error();
      return nullptr;
    }
    if (!queue_owner_allowed(attach_fd, options.security)) {
      ::mq_close(attach_fd);
      log_line(log_level::warn, "refused publisher at " + uri + " (queue owner not allowed)");
      ec = make_error_code(errc::access_denied);
      return nullptr;
    }
    queue_name data = target->queue;
    data.link_id = random_id();
    data.owner_pid = static_cast<std::uint32_t>(::getpid());
    // The marker before the queue, as for the publisher's.
    const fs::path marker = marker_path(target->domain_dir, data);
    ensure_marker_dir(target->domain_dir, options.security);
    const int mfd = ::open(marker.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (mfd < 0) {
      ec = last_error();
      ::mq_close(attach_fd);
      return nullptr;
    }
    ::close(mfd);
    long msgsize = 0;
    const mqd_t data_fd = create_queue(data.text(), read_mq_limits(), options.max_frame, options.security, msgsize, ec);
    if (data_fd < 0) {
      log_line(log_level::warn, "mq: cannot create queue " + data.text() + ": " + ec.message());
      std::error_code ignored;
      fs::remove(marker, ignored);
      ::mq_close(attach_fd);
      return nullptr;
    }
    auto state = std::make_shared<mq_link_state>(io, data_fd, msgsize, data, attach_fd, target->queue,
                                                 target->domain_dir, options, std::move(callbacks));
    const auto m = encode_control({control_kind::attach, data.link_id, data.owner_pid});
    int sent = -1;
    do {
      sent = ::mq_send(attach_fd, m.data(), m.size(), 0);
    } while (sent != 0 && errno == EINTR);
    if (sent != 0) {
      // EAGAIN: many subscribers attach at once; a later scan retries.
      ec = errno == EAGAIN ? make_error_code(errc::would_block) : last_error();
      state->close(false);
      return nullptr;
    }
    state->start();
    ec.clear();
    return std::make_unique<mq_link>(std::move(state));
  }
};

}  // namespace

void register_mqueue(transport_registry& registry) { registry.add(std::make_unique<mq_transport>()); }

}  // namespace ipcbus::transport::mqueue
