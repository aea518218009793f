#include "mailbox/format.h"

#include <sys/stat.h>


namespace popd::mailbox {

Format take_format(std::string& path_template) {
  if (path_template.starts_with("maildir:")) {
    path_template.erase(0, 8);
    return Format::maildir;
  }
  if (path_template.starts_with("mbox:")) {
    path_template.erase(0, 5);
    return Format::mbox;
  }
  return path_template.ends_with('/') ? Format::maildir : Format::automatic;
}

bool scheme_fits(Format format, UidScheme scheme) {
  if (format == Format::maildir)
    return scheme == UidScheme::popd || scheme == UidScheme::dovecot || scheme == UidScheme::courier;
  return format == Format::automatic || scheme != UidScheme::courier;
}

Format format_at(Format given, const std::string& path) {
  if (given != Format::automatic) return given;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return Format::mbox;
  for (const char* folder : {"/cur", "/new"})
    if (::stat((path + folder).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return Format::mbox;
  return Format::maildir;
}

}  // namespace popd::mailbox
