// Memory for the message list (Mbox::messages).
//
// A large mailbox keeps megabytes of them in a std::deque, which asks for
// it in 504-byte blocks. From the C library's heap each new page of those
// is a page fault when first written, most of a login's faults. Here the
// blocks come from chunks that are mapped with MAP_POPULATE: the kernel
// fills a chunk's pages in one call, with no fault per page, which matters
// most on a VM, where a fault costs several microseconds.
#pragma once

#include <cstddef>

namespace popd::mailbox {

namespace message_memory {

// AddressSanitizer would see a reused block as valid memory: under it,
// every block is its own allocation, so that a use after free is caught.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool pooled = false;
#else
inline constexpr bool pooled = true;
#endif

// Blocks up to this size come from the chunks; larger requests (the
// deque's map of blocks once it grows) from operator new.
inline constexpr std::size_t block_size = 512;

// `bytes` of memory, aligned for any type; throws std::bad_alloc if none.
void* allocate(std::size_t bytes);
// Gives back what allocate(bytes) returned: a block is kept for the next
// allocate() (the chunks stay for the life of the process).
void deallocate(void* block, std::size_t bytes) noexcept;

}  // namespace message_memory

// A std::allocator for containers that hold messages. Stateless: any two
// are equal, so containers move and swap their memory freely.
template <class T>
struct MessageAllocator {
  using value_type = T;

  MessageAllocator() = default;
  template <class U>
  MessageAllocator(const MessageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) { return static_cast<T*>(message_memory::allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { message_memory::deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const MessageAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace popd::mailbox
