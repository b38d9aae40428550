// Fuzz target: the shm:// ring reader (transports/shm/shm_reader.hpp) on a
// segment full of garbage.
//
// Each input becomes the content of a real POSIX shared memory segment of a
// ring with a 4 KiB capacity, which the real ring_reader attaches to and reads
// through next()/release() until it reports nothing more or an error. The
// reader must report malformed segments and records as errors, and deliver
// only frames within its limit; ASan checks its copies, and every byte of a
// delivered frame is read here, so a view past the mapping faults.
//
// Input layout. The first byte chooses how the rest is used:
//  - even: the rest is the segment's bytes from offset 0 (header, slot table,
//    ring), zero-filled or cut to the segment size: attach's validation.
//  - odd: a valid header is written here and the rest is
//      [1 byte: qos (mod 3) | 1 byte: max_frame = 64 << (n mod 12)]
//      [8 bytes: base position][4 × 2 bytes: tail - base, tail_intent - tail,
//       head - base, blobs_released]
//      then the ring's bytes from its offset 0: the records themselves.
// tests/fuzz/make_seeds.py writes seeds of both kinds.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_check.hpp"
#include "ipcbus/config.hpp"
#include "ipcbus/frame_codec.hpp"
#include "shm_layout.hpp"
#include "shm_reader.hpp"
#include "shm_segment.hpp"

namespace shm = ipcbus::transport::shm;
namespace layout = ipcbus::transport::shm::layout;

namespace {

constexpr std::uint64_t capacity = 4096;
constexpr std::size_t segment_size = layout::data_offset + capacity;
constexpr int max_reads = 256;
// IPCBUS_FUZZ_VERBOSE=1 prints what the reader reports, to check what a seed reaches.
const bool verbose = std::getenv("IPCBUS_FUZZ_VERBOSE") != nullptr;

// Takes little-endian integers off the front of the input; zeros once it runs out.
struct input_reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint64_t take(std::size_t bytes) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes && n > 0; ++i, ++p, --n) v |= std::uint64_t{*p} << (8 * i);
    return v;
  }
};

// Writes a header that attach() accepts, with positions from the input.
void write_valid_header(char* base, input_reader& in, ipcbus::link_options& options) {
  auto* h = reinterpret_cast<layout::ring_header*>(base);
  const auto qos = static_cast<std::uint32_t>(in.take(1) % 3);
  options.max_frame = std::uint64_t{64} << (in.take(1) % 12);
  const std::uint64_t pos = in.take(8);
  const std::uint64_t tail = pos + in.take(2);
  const std::uint64_t tail_intent = tail + in.take(2);
  const std::uint64_t head = pos + in.take(2);
  const std::uint64_t released = in.take(2);
  h->version = layout::version;
  h->slots = layout::slot_count;
  h->capacity = capacity;
  h->data_offset = layout::data_offset;
  h->publisher_id = 1;
  h->owner_pid = static_cast<std::uint32_t>(::getpid());  // alive: blob losses are not excused
  h->qos = qos;
  h->tail_intent.store(tail_intent);
  h->tail.store(tail);
  h->head.store(head);
  h->history_start.store(pos);
  h->blobs_released.store(released);
  std::memcpy(base + layout::data_offset, in.p, std::min<std::size_t>(in.n, capacity));
  h->magic.store(layout::ring_magic);
}

// Reads every byte of the frame's views, as a subscriber's callback would.
std::uint32_t touch(const ipcbus::frame_view& f) {
  std::uint32_t sum = 0;
  for (char c : f.header.payload_type) sum += static_cast<unsigned char>(c);
  for (char c : f.payload) sum += static_cast<unsigned char>(c);
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string name = "/ipcbus-fuzz-" + std::to_string(::getpid());
  ::shm_unlink(name.c_str());  // left over by an earlier crash of this pid, if any
  ipcbus::link_options options;
  options.max_frame = 1 << 20;
  {
    shm::mapped_segment seg;
    const auto ec = shm::create_segment(name, segment_size, options.security, seg);
    IPCBUS_FUZZ_CHECK(!ec);
    input_reader in{data + 1, size - 1};
    if (data[0] % 2 == 0) std::memcpy(seg.data(), in.p, std::min(in.n, segment_size));
    else write_valid_header(seg.data(), in, options);
  }
  shm::ring_reader reader;
  std::string why;
  const auto ec = reader.attach(name, options, why);
  ::shm_unlink(name.c_str());  // the reader's mapping keeps the memory
  if (verbose) std::fprintf(stderr, "attach: %s %s\n", ec.message().c_str(), why.c_str());
  if (ec) {
    IPCBUS_FUZZ_CHECK(!why.empty());
    return 0;
  }
  volatile std::uint32_t sink = 0;
  for (int i = 0; i < max_reads; ++i) {
    ipcbus::frame_view f;
    const shm::read_result r = reader.next(f);
    if (verbose)
      std::fprintf(stderr, "next: %d seq %llu, %zu bytes %s %s\n", static_cast<int>(r.what),
                   static_cast<unsigned long long>(f.header.sequence), f.payload.size(), r.ec.message().c_str(),
                   r.why.c_str());
    if (r.what == shm::read_result::frame) {
      IPCBUS_FUZZ_CHECK(f.payload.size() <= options.max_frame);
      sink = sink + touch(f);
      reader.release();
      continue;
    }
    if (r.what == shm::read_result::failed) IPCBUS_FUZZ_CHECK(r.ec && !r.why.empty());
    if (r.what != shm::read_result::again) break;
  }
  (void)reader.data_available();
  reader.detach();
  return 0;
}
