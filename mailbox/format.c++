#include "mailbox/format.h"

#include <sys/stat.h>

#include <string_view>

namespace popd::mailbox {

Format take_format(std::string& path_template) {
  for (auto [prefix, format] : {std::pair{std::string_view("maildir:"), Format::maildir},
                                std::pair{std::string_view("mbox:"), Format::mbox}}) {
    if (path_template.starts_with(prefix)) {
      path_template.erase(0, prefix.size());
      return format;
    }
  }
  return path_template.ends_with('/') ? Format::maildir : Format::automatic;
}

Format format_at(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return Format::mbox;
  for (const char* folder : {"/cur", "/new", "/tmp"})
    if (::stat((path + folder).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return Format::mbox;
  return Format::maildir;
}

}  // namespace popd::mailbox
