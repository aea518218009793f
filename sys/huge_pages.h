// Huge pages for the password hash's memory.
//
// pam_unix hashes with libxcrypt, which maps the memory of a memory-hard
// hash (yescrypt: 16 MiB) with mmap and writes every page of it. In 4 KiB
// pages each is a page fault; the faults, not the hash, were most of a
// login's CPU on a VM. Transparent huge pages cut them 512-fold, but
// Debian's default mode ("madvise") uses them only for memory that asks,
// and libxcrypt does not ask. popd's binary defines mmap (sys/mmap_hook.c++)
// so that every library it loads, PAM's modules and libxcrypt among them,
// gets large private anonymous mappings from map_huge_aligned.
#pragma once

#include <cstddef>

namespace popd::sys {

// Whether a mmap request is one map_huge_aligned serves: no address, no
// file, private, anonymous and nothing else, readable and writable, at
// least params::huge_mapping_min bytes.
bool wants_huge_pages(void* address, std::size_t length, int protection, int flags, int fd, long offset);

// A private anonymous read-write mapping of `length` bytes that starts on a
// huge page boundary and is advised for transparent huge pages (where the
// system allows them; else it is an ordinary mapping). munmap of the
// pointer and `length` releases all of it. MAP_FAILED, with errno, if none.
void* map_huge_aligned(std::size_t length);

}  // namespace popd::sys
