// Whole-buffer reads and writes that retry short transfers and EINTR.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace popd::io {

// Each returns false with errno set on failure.
bool pread_all(int fd, char* buffer, std::size_t size, std::uint64_t offset);
bool pwrite_all(int fd, std::string_view data, std::uint64_t offset);
bool write_all(int fd, std::string_view data);
// fsync of the directory that holds `path`, so that a new or removed name in
// it is durable.
bool sync_directory_of(const std::string& path);
std::string error_text(int error_number);

}  // namespace popd::io
