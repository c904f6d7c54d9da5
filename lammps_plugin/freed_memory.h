/* Keeping freed memory in the process: glibc's malloc settings for repeated force calls, as
   mdmonitor/common/memory.py sets them for Python (its docstring says why). Every force call
   of the model allocates and frees the same large tensors; by default glibc serves them with
   fresh mmap'd pages and trims the heap, so each step faults them all back in. M_MMAP_MAX = 0
   takes large allocations from the heap and M_TRIM_THRESHOLD = -1 never trims it: the process
   keeps its peak heap size instead. pair_style mdmonitor sets this when it is created (not at
   plugin load, so LAMMPS runs without it are untouched); MDMONITOR_KEEP_FREED_MEMORY=0 in the
   environment leaves malloc as it is. */

#ifndef MDMONITOR_FREED_MEMORY_H
#define MDMONITOR_FREED_MEMORY_H

#include <cstdlib>
#include <cstring>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace mdmonitor {

constexpr const char *KEEP_FREED_MEMORY_SWITCH = "MDMONITOR_KEEP_FREED_MEMORY";

/* true if set; false without glibc or with MDMONITOR_KEEP_FREED_MEMORY=0 */
inline bool keep_freed_memory()
{
  const char *switch_value = std::getenv(KEEP_FREED_MEMORY_SWITCH);
  if (switch_value && std::strcmp(switch_value, "0") == 0) return false;
#ifdef __GLIBC__
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;
#else
  return false;
#endif
}

}    // namespace mdmonitor

#endif
