#include "io/ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include "sys/file.h"
#include "params.h"

namespace popd::io {

// The first page of the memory: each side's position and whether it
// sleeps. Each field has its cache line.
struct Ring::Shared {
  alignas(64) std::uint64_t published;     // written by the session
  alignas(64) std::uint64_t consumed;      // written by the relay
  alignas(64) std::uint32_t reader_waits;  // the relay sleeps until woken
  alignas(64) std::uint32_t writer_waits;  // the session sleeps until woken
};

namespace {

constexpr std::size_t capacity = params::ring_size;
constexpr int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

std::size_t page_size() {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

template <typename T>
std::atomic_ref<T> atomic(T& value) {
  return std::atomic_ref<T>(value);
}

}  // namespace

Ring::Ring(sys::UniqueFd fd, char* base, std::size_t mapped) : fd_(std::move(fd)), base_(base), mapped_(mapped) {}

Ring::Ring(Ring&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      mapped_(other.mapped_),
      broken_(other.broken_),
      position_(other.position_),
      staged_(other.staged_) {}

Ring::~Ring() {
  if (base_) ::munmap(base_, mapped_);
}

std::size_t Ring::file_size() { return page_size() + capacity; }

std::optional<Ring> Ring::create(std::string& error) {
  sys::UniqueFd fd(::memfd_create("popd-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(file_size())) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) {
    error = "cannot make the reply ring: " + sys::error_text(errno);
    return std::nullopt;
  }
  return map(std::move(fd), error);
}

std::optional<Ring> Ring::attach(sys::UniqueFd fd, std::string& error) {
  struct stat st;
  int sealed = ::fcntl(fd.get(), F_GET_SEALS);
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || sealed < 0 || (sealed & seals) != seals ||
      static_cast<std::uint64_t>(st.st_size) != page_size() + capacity) {
    error = "the reply ring is not a sealed memfd of its size";
    return std::nullopt;
  }
  return map(std::move(fd), error);
}

// The control page, then the data twice in a row: a piece that wraps
// around the end is contiguous in memory.
std::optional<Ring> Ring::map(sys::UniqueFd fd, std::string& error) {
  std::size_t page = page_size(), total = page + 2 * capacity;
  void* reserved = ::mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    error = "cannot map the reply ring: " + sys::error_text(errno);
    return std::nullopt;
  }
  char* base = static_cast<char*>(reserved);
  Ring ring(std::move(fd), base, total);
  constexpr int shared = PROT_READ | PROT_WRITE;
  if (::mmap(base, page + capacity, shared, MAP_SHARED | MAP_FIXED, ring.fd(), 0) == MAP_FAILED ||
      ::mmap(base + page + capacity, capacity, shared, MAP_SHARED | MAP_FIXED, ring.fd(), static_cast<off_t>(page)) ==
          MAP_FAILED) {
    error = "cannot map the reply ring: " + sys::error_text(errno);
    return std::nullopt;
  }
  return ring;
}

Ring::Shared& Ring::shared() const { return *reinterpret_cast<Shared*>(base_); }

char* Ring::data_start() const { return base_ + page_size(); }

std::uint64_t Ring::consumed_by_reader() {
  std::uint64_t consumed = atomic(shared().consumed).load(std::memory_order_acquire);
  if (consumed > position_ || position_ - consumed > capacity) broken_ = true;
  return broken_ ? position_ : consumed;
}

std::uint64_t Ring::published_by_writer() {
  std::uint64_t published = atomic(shared().published).load(std::memory_order_acquire);
  if (published < position_ || published - position_ > capacity) broken_ = true;
  return broken_ ? position_ : published;
}

std::span<char> Ring::room() {
  std::uint64_t end = position_ + staged_;
  std::uint64_t used = end - consumed_by_reader();
  if (broken_ || used >= capacity) return {};
  return {data_start() + end % capacity, capacity - used};
}

bool Ring::publish() {
  position_ += std::exchange(staged_, 0);
  atomic(shared().published).store(position_, std::memory_order_seq_cst);
  // Either the reader sees the new position, or this sees that it sleeps.
  return atomic(shared().reader_waits).exchange(0, std::memory_order_seq_cst) != 0;
}

bool Ring::prepare_to_wait_for_room(std::size_t needed) {
  atomic(shared().writer_waits).store(1, std::memory_order_seq_cst);
  if (room().size() < needed && !broken_) return true;
  atomic(shared().writer_waits).store(0, std::memory_order_relaxed);
  return false;
}

std::string_view Ring::data() {
  std::uint64_t published = published_by_writer();
  return {data_start() + position_ % capacity, published - position_};
}

bool Ring::consume(std::size_t size) {
  position_ += size;
  atomic(shared().consumed).store(position_, std::memory_order_seq_cst);
  // A writer that sleeps is woken once half the ring is free, not for
  // every record: it then fills that half at once.
  if (published_by_writer() - position_ > capacity / 2) return false;
  return atomic(shared().writer_waits).exchange(0, std::memory_order_seq_cst) != 0;
}

bool Ring::prepare_to_wait_for_data() {
  atomic(shared().reader_waits).store(1, std::memory_order_seq_cst);
  if (data().empty() && !broken_) return true;
  atomic(shared().reader_waits).store(0, std::memory_order_relaxed);
  return false;
}

}  // namespace popd::io
