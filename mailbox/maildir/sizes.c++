#include "mailbox/maildir/sizes.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "mailbox/maildir/checked_file.h"
#include "params.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

static_assert(params::maildir_list_limit <= UINT32_MAX, "offsets into the sizes file are 32 bits");

// "SIZE BASE" lines (checked_file.h).
constexpr std::string_view magic = "popd-maildir-sizes-1\n";

}  // namespace

std::pair<std::string_view, std::uint64_t> Sizes::entry_at(std::uint32_t offset) const {
  std::string_view rest = std::string_view(text_).substr(offset);
  std::size_t space = rest.find(' ');
  std::uint64_t size = 0;
  std::from_chars(rest.data(), rest.data() + space, size);
  return {rest.substr(space + 1, rest.find('\n') - space - 1), size};
}

void Sizes::load(const std::string& path) {
  line_starts_.clear();
  next_ = 0;
  text_.clear();
  sys::OwnFile own = sys::open_own_file(path, O_RDONLY, ::geteuid());
  if (!own.fd || static_cast<std::uint64_t>(own.st.st_size) > params::maildir_list_limit) return;
  text_.resize(static_cast<std::size_t>(own.st.st_size));
  if (!sys::pread_all(own.fd.get(), text_.data(), text_.size(), 0)) return text_.clear();
  auto body = checked_body(text_, magic);
  if (!body) return text_.clear();
  line_starts_.reserve(static_cast<std::size_t>(std::count(body->begin(), body->end(), '\n')));
  for (std::string_view rest = *body; !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    std::uint64_t size = 0;
    auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), size);
    if (error != std::errc() || end == line.data() + line.size() || *end != ' ') return line_starts_.clear();
    line_starts_.push_back(static_cast<std::uint32_t>(line.data() - text_.data()));
    rest.remove_prefix(line.size() + 1);
  }
  // save() writes them in order: sorting is for a file written otherwise.
  auto by_base = [&](std::uint32_t a, std::uint32_t b) { return entry_at(a).first < entry_at(b).first; };
  if (!std::is_sorted(line_starts_.begin(), line_starts_.end(), by_base)) std::sort(line_starts_.begin(), line_starts_.end(), by_base);
}

std::optional<std::uint64_t> Sizes::find(std::string_view base) const {
  // A listing asks in about the file's order: the entry after the last
  // one found first.
  if (next_ < line_starts_.size()) {
    if (auto [name, size] = entry_at(line_starts_[next_]); name == base) {
      ++next_;
      return size;
    }
  }
  auto found = std::lower_bound(line_starts_.begin(), line_starts_.end(), base,
                                [&](std::uint32_t at, std::string_view key) { return entry_at(at).first < key; });
  if (found == line_starts_.end() || entry_at(*found).first != base) return std::nullopt;
  next_ = static_cast<std::size_t>(found - line_starts_.begin()) + 1;
  return entry_at(*found).second;
}

bool Sizes::save(const std::string& path, const Listing& listing, std::string& error) {
  std::vector<std::uint32_t> counted;  // not from ,W=, by base name
  for (std::uint32_t i = 0; i < listing.size(); ++i)
    if (!parse_name(listing.name(listing[i])).wire_size) counted.push_back(i);
  std::sort(counted.begin(), counted.end(),
            [&](std::uint32_t a, std::uint32_t b) { return listing.base(listing[a]) < listing.base(listing[b]); });
  CheckedFile file(path, magic);
  for (std::uint32_t i : counted) {
    file.add(std::to_string(listing[i].size));
    file.add(" ");
    file.add(listing.base(listing[i]));
    file.add("\n");
  }
  return file.finish(false, error);
}

}  // namespace popd::mailbox::maildir
