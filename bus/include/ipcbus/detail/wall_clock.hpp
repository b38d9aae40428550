// Wall-clock time (CLOCK_REALTIME, ns since the epoch) for the publish time
// that every frame carries, at a fraction of clock_gettime's cost where that
// is slow.
//
// Why: on virtual machines the vDSO clock goes through the hypervisor's clock
// page (kvm-clock): 28-85 ns on the development VM depending on its load,
// against 11-16 ns for this clock, paid once per publish. Where the CPU
// says its TSC runs at a constant rate in every state (constant_tsc and
// nonstop_tsc) and the kernel itself keeps time with it (clocksource tsc or
// kvm-clock), each thread reads the real clock about once a millisecond and
// extrapolates with the TSC in between, at a rate measured from those reads.
// Anywhere else, and until a thread has measured the rate, it is
// clock_gettime.
//
// What a reader may rely on: within a few microseconds of CLOCK_REALTIME (a
// step of the system clock shows within a millisecond). Two reads on one
// thread may go back by a few nanoseconds where the extrapolation meets the
// next real read, as two clocks on two CPUs may anyway.
#pragma once

#include <cstdint>

namespace ipcbus::detail {

std::int64_t wall_clock_ns();

// The same without the TSC: what wall_clock_ns() is checked against.
std::int64_t wall_clock_ns_exact();

// Whether wall_clock_ns() extrapolates with the TSC on this machine.
bool wall_clock_uses_tsc();

}  // namespace ipcbus::detail
