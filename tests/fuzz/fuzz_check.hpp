// What the fuzz targets share: a check that aborts with a message, so that a
// broken invariant is a crash libFuzzer saves (and the corpus replay fails on),
// whatever the build's NDEBUG.
//
// Thread-safety: no state.
#pragma once

#include <cstdio>
#include <cstdlib>

#define IPCBUS_FUZZ_CHECK(cond)                                                          \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
