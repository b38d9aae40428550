// One pause of a spin-wait loop. Internal.
//
// Tells the CPU that this thread is spinning: on x86 `pause` lets the other
// hyper-thread run and avoids a memory-order mis-speculation penalty when the
// awaited store arrives; elsewhere a plain compiler barrier.
#pragma once

namespace ipcbus::detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

}  // namespace ipcbus::detail
