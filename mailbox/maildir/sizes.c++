#include "mailbox/maildir/sizes.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "mailbox/maildir/checked_text.h"
#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

// "SIZE BASE" lines (checked_text.h).
constexpr std::string_view magic = "popd-maildir-sizes-1\n";

}  // namespace

void Sizes::load(const std::string& path) {
  sizes_.clear();
  next_ = 0;
  text_.clear();
  sys::OwnFile own = sys::open_own_file(path, O_RDONLY, ::geteuid());
  if (!own.fd || static_cast<std::uint64_t>(own.st.st_size) > params::maildir_list_limit) return;
  text_.resize(static_cast<std::size_t>(own.st.st_size));
  if (!sys::pread_all(own.fd.get(), text_.data(), text_.size(), 0)) return text_.clear();
  auto body = checked_body(text_, magic);
  if (!body) return text_.clear();
  sizes_.reserve(static_cast<std::size_t>(std::count(body->begin(), body->end(), '\n')));
  for (std::string_view rest = *body; !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    rest.remove_prefix(line.size() + 1);
    std::uint64_t size = 0;
    auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), size);
    if (error != std::errc() || end == line.data() + line.size() || *end != ' ') {
      sizes_.clear();
      return;
    }
    sizes_.emplace_back(line.substr(end - line.data() + 1), size);
  }
  // save() writes them in order: sorting is for a file written otherwise.
  if (!std::is_sorted(sizes_.begin(), sizes_.end())) std::sort(sizes_.begin(), sizes_.end());
}

std::optional<std::uint64_t> Sizes::find(std::string_view base) const {
  // A listing asks in about the file's order: the entry after the last
  // one found first.
  if (next_ < sizes_.size() && sizes_[next_].first == base) return sizes_[next_++].second;
  auto found = std::lower_bound(sizes_.begin(), sizes_.end(), base,
                                [](const auto& entry, std::string_view key) { return entry.first < key; });
  if (found == sizes_.end() || found->first != base) return std::nullopt;
  next_ = static_cast<std::size_t>(found - sizes_.begin()) + 1;
  return found->second;
}

bool Sizes::save(const std::string& path, const Listing& listing, std::string& error) {
  std::vector<std::pair<std::string_view, std::uint64_t>> counted;  // not from ,W=, by base name
  for (std::size_t i = 0; i < listing.size(); ++i)
    if (!parse_name(listing.name(listing[i])).wire_size) counted.emplace_back(listing.base(listing[i]), listing[i].size);
  std::sort(counted.begin(), counted.end());
  std::string text(magic);
  text.reserve(counted.size() * 64);
  for (const auto& [base, size] : counted) {
    text += std::to_string(size);
    text += ' ';
    text += base;
    text += '\n';
  }
  seal(text);
  std::string temporary = path + ".new";
  ::unlink(temporary.c_str());
  sys::UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd || !sys::write_all(fd.get(), text) || ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = "cannot write " + path + ": " + sys::error_text(errno);
    ::unlink(temporary.c_str());
    return false;
  }
  return true;
}

}  // namespace popd::mailbox::maildir
