// Linked into popd's binary only, never into the library or the tests'
// binaries, and not under AddressSanitizer, which has its own mmap: the
// binary's mmap comes first in symbol lookup, so the libraries popd loads
// (PAM's modules and libxcrypt too) call this. See sys/huge_pages.h.
#include <sys/mman.h>

#include "sys/huge_pages.h"

#ifndef __SANITIZE_ADDRESS__
extern "C" void* mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset) {
  if (popd::sys::wants_huge_pages(address, length, protection, flags, fd, offset))
    return popd::sys::map_huge_aligned(length);
  return ::mmap64(address, length, protection, flags, fd, offset);  // the C library's, under its other name
}
#endif
