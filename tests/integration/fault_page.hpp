// What fault_test and its peer program (fault_peer.cpp) share: the message
// format with its per-message checksum, and the page of counters a peer keeps
// in a small mapped file while it runs, so that the test reads what a peer did
// even after SIGKILLing or SIGSTOPping it.
//
// Thread-safety: every field of fault_page is a lock-free atomic; the test and
// the peer touch them from any thread, in any process.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "test_messages.pb.h"

namespace ipcbus::fault {

constexpr std::size_t max_publishers = 32;     // publisher numbers 0..31
constexpr std::size_t max_subscriptions = 16;  // subscriptions per subscriber process

// What one subscriber process saw from one publisher (by publisher number).
struct link_counts {
  std::atomic<std::uint64_t> delivered;   // intact messages
  std::atomic<std::uint64_t> last_index;  // index of the last intact message
  std::atomic<std::uint64_t> gaps;        // indices skipped (index > last + 1)
  std::atomic<std::uint64_t> disorder;    // index <= last: a duplicate or a reordering
};

// One Subscriber of a subscriber process: its bus counters, mirrored.
struct subscription_counts {
  std::atomic<std::uint64_t> dropped;     // discarded by this subscriber's drop policy
  std::atomic<std::uint64_t> lost;        // gaps the bus saw (MessageInfo::lost_before)
  std::atomic<std::uint64_t> bad_frames;  // malformed frames refused
  std::atomic<std::uint64_t> publishers;  // attached publishers right now
};

struct fault_page {
  // Written by the test.
  std::atomic<std::uint32_t> go;    // publishers: start publishing
  std::atomic<std::uint32_t> stop;  // publishers with COUNT 0: stop publishing
  std::atomic<std::uint32_t> quit;  // everyone: shut down and exit
  std::atomic<std::uint32_t> hog;   // subscribers: 1 = take every free file descriptor, 0 = give them back
  // Written by the peer.
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint32_t> ready;  // set up (advertised / subscribed)
  std::atomic<std::uint32_t> done;   // publisher: finished publishing; counters final
  std::atomic<std::uint32_t> hogging;  // subscriber: descriptors taken (hog acknowledged)
  std::atomic<std::uint64_t> subscribers;     // publisher: attached subscribers right now
  std::atomic<std::uint64_t> sent;            // publisher: publish calls that succeeded
  std::atomic<std::uint64_t> timed_out;       // publisher: publish calls that returned timed_out
  std::atomic<std::uint64_t> other_errors;    // publisher: any other error
  std::atomic<std::uint64_t> last_error;      // publisher: value of the last other error
  std::atomic<std::uint64_t> max_publish_us;  // publisher: longest publish call (logged only)
  std::atomic<std::uint64_t> pub_dropped;     // publisher: its bus counter `dropped`
  std::atomic<std::uint64_t> pub_timeouts;    // publisher: its bus counter `timeouts`
  std::atomic<std::uint64_t> corrupt;         // subscriber: messages failing the checksum
  std::atomic<std::uint64_t> received;        // subscriber: every message, intact or not
  link_counts links[max_publishers];
  subscription_counts subs[max_subscriptions];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// A fault_page mapped from a file (created zero-filled if missing). Throws on failure.
class page_file {
 public:
  explicit page_file(const std::filesystem::path& file) {
    const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + file.string());
    void* base = MAP_FAILED;
    if (::ftruncate(fd, sizeof(fault_page)) == 0)
      base = ::mmap(nullptr, sizeof(fault_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int e = errno;
    ::close(fd);
    if (base == MAP_FAILED) throw std::system_error(e, std::generic_category(), "map " + file.string());
    page_ = static_cast<fault_page*>(base);  // zero bytes are every counter at 0
  }
  ~page_file() { ::munmap(page_, sizeof(fault_page)); }
  page_file(const page_file&) = delete;
  page_file& operator=(const page_file&) = delete;
  fault_page* operator->() const { return page_; }
  fault_page& operator*() const { return *page_; }

 private:
  fault_page* page_ = nullptr;
};

// FNV-1a over the publisher number, the index and the body: a torn message, a
// body under another message's header, or one publisher's bytes under
// another's number all fail it.
inline std::uint32_t message_checksum(std::uint32_t publisher, std::uint64_t index, std::string_view body) {
  std::uint32_t h = 2166136261u;
  auto mix = [&h](const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 16777619u;
  };
  mix(&publisher, sizeof publisher);
  mix(&index, sizeof index);
  mix(body.data(), body.size());
  return h;
}

// A message of publisher `publisher`: the body starts with the publisher number
// (4 bytes), then bytes that depend on publisher and index.
inline ipcbus::test::Sample make_message(std::uint32_t publisher, std::uint64_t index, std::size_t size) {
  if (size < sizeof publisher) size = sizeof publisher;
  std::string body(size, '\0');
  std::memcpy(body.data(), &publisher, sizeof publisher);
  for (std::size_t i = sizeof publisher; i < size; ++i)
    body[i] = static_cast<char>((index * 131 + i * 7 + publisher * 17) & 0xff);
  ipcbus::test::Sample s;
  s.set_index(index);
  s.set_checksum(message_checksum(publisher, index, body));
  s.set_body(std::move(body));
  return s;
}

// The publisher number of an intact message; -1 when the message is damaged.
inline int check_message(const ipcbus::test::Sample& s) {
  std::uint32_t publisher = 0;
  if (s.body().size() < sizeof publisher) return -1;
  std::memcpy(&publisher, s.body().data(), sizeof publisher);
  if (publisher >= max_publishers) return -1;
  if (message_checksum(publisher, s.index(), s.body()) != s.checksum()) return -1;
  return static_cast<int>(publisher);
}

}  // namespace ipcbus::fault
