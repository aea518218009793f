#include "mailbox/file_window.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

namespace popd::mailbox {

namespace {

// The windows the SIGBUS handler guards, a slot each while they exist (a
// session has at most two: the index check's, then RETR's).
struct Guard {
  std::atomic<bool> taken{false};
  std::atomic<char*> data{nullptr};
  std::atomic<std::uint64_t> length{0};
  volatile sig_atomic_t cut_short = 0;
};
Guard guards[8];
struct sigaction previous_action;

// Zeros over [data, data + length), by the system call itself: no wrapper
// that may be interposed (popd's binary has its own mmap, a sanitizer
// another) runs in the signal handler, only the kernel's mmap, which is
// safe there.
bool map_zeros(char* data, std::uint64_t length) {
  long mapped = ::syscall(SYS_mmap, data, length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  return mapped == reinterpret_cast<long>(data);
}

void on_bus_error(int signal, siginfo_t* info, void*) {
  char* address = static_cast<char*>(info->si_addr);
  const int saved_errno = errno;
  for (Guard& guard : guards) {
    char* data = guard.data.load();
    std::uint64_t length = guard.length.load();
    if (info->si_code > 0 && data && address >= data && address < data + length && map_zeros(data, length)) {
      guard.cut_short = 1;
      errno = saved_errno;
      return;  // the read is made again, and finds zeros
    }
  }
  // Not ours: as if this handler were not there.
  ::sigaction(SIGBUS, &previous_action, nullptr);
  if (info->si_code <= 0) ::raise(signal);  // sent, not a fault that recurs on return
}

// A free slot, or -1.
int take_guard() {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return ::sigaction(SIGBUS, &action, &previous_action) == 0;
  }();
  if (!installed) return -1;
  for (int slot = 0; slot < static_cast<int>(std::size(guards)); ++slot) {
    bool free = false;
    if (guards[slot].taken.compare_exchange_strong(free, true)) {
      guards[slot].cut_short = 0;
      return slot;
    }
  }
  return -1;
}

}  // namespace

FileWindow::~FileWindow() {
  unmap();
  if (slot_ >= 0) guards[slot_].taken = false;
}

std::optional<std::string_view> FileWindow::bytes(int fd, std::uint64_t begin, std::uint64_t end,
                                                  std::uint64_t file_size, std::uint64_t size) {
  if (begin > end || end > file_size) return std::nullopt;
  if (begin == end) return std::string_view();
  if (!data_ || begin < offset_ || end > offset_ + length_) {
    unmap();
    if (slot_ < 0 && (slot_ = take_guard()) < 0) return std::nullopt;  // unguarded, it could kill the process
    static const std::uint64_t page = ::sysconf(_SC_PAGESIZE);
    std::uint64_t offset = begin / page * page;
    std::uint64_t length = std::min(std::max(size, end - offset), file_size - offset);
    // MAP_POPULATE: the pages are mapped in one call, not a fault each
    // 64 KiB, which a RETR of a large message would pay page by page.
    void* data = ::mmap(nullptr, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, static_cast<off_t>(offset));
    if (data == MAP_FAILED) return std::nullopt;
    data_ = static_cast<char*>(data);
    offset_ = offset;
    length_ = length;
    Guard& guard = guards[slot_];
    guard.length = length_;
    guard.data = data_;
  }
  return std::string_view(data_ + (begin - offset_), end - begin);
}

bool FileWindow::cut_short() const { return slot_ >= 0 && guards[slot_].cut_short; }

void FileWindow::unmap() {
  if (!data_) return;
  guards[slot_].data = nullptr;  // first: never a moment with the old start and a new length
  ::munmap(data_, length_);
  data_ = nullptr;
}

}  // namespace popd::mailbox
