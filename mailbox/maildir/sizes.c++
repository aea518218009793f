#include "mailbox/maildir/sizes.h"

#include <fcntl.h>
#include <unistd.h>

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
  text_.clear();
  sys::OwnFile own = sys::open_own_file(path, O_RDONLY, ::geteuid());
  if (!own.fd || static_cast<std::uint64_t>(own.st.st_size) > params::maildir_list_limit) return;
  text_.resize(static_cast<std::size_t>(own.st.st_size));
  if (!sys::pread_all(own.fd.get(), text_.data(), text_.size(), 0)) return text_.clear();
  auto body = checked_body(text_, magic);
  if (!body) return text_.clear();
  for (std::string_view rest = *body; !rest.empty();) {
    std::string_view line = rest.substr(0, rest.find('\n'));
    rest.remove_prefix(line.size() + 1);
    std::uint64_t size = 0;
    auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), size);
    if (error != std::errc() || end == line.data() + line.size() || *end != ' ') {
      sizes_.clear();
      return;
    }
    sizes_.emplace(line.substr(end - line.data() + 1), size);
  }
}

std::optional<std::uint64_t> Sizes::find(std::string_view base) const {
  auto found = sizes_.find(base);
  if (found == sizes_.end()) return std::nullopt;
  return found->second;
}

bool Sizes::save(const std::string& path, const Listing& listing, std::string& error) {
  std::string body;
  for (std::size_t i = 0; i < listing.size(); ++i) {
    const Entry& entry = listing[i];
    if (parse_name(listing.name(entry)).wire_size) continue;  // the name says it
    body += std::to_string(entry.size) + " ";
    body += listing.base(entry);
    body += "\n";
  }
  std::string text = checked_text(magic, body);
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
