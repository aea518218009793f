// --login-delay (RFC 2449's LOGIN-DELAY): the time of a user's last
// successful login, kept as the modification time of a per-user file
// beside the index. The session, as the user, reads and sets it, so it
// survives restarts and no other user can set it: a file there that is not
// the user's own (open_own_file's rule) is ignored, and logged.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

namespace popd::server {

struct LoginDelay {
  std::chrono::seconds wait{0};  // still to wait before the next login; 0: now
  std::string note;              // why a stamp file there was not trusted
};

// What `delay` after the login recorded at `path`, if any, leaves at `now`.
// A recorded time after `now` (the clock was set back) does not count.
LoginDelay login_delay_left(const std::string& path, uid_t owner, std::chrono::seconds delay,
                            std::chrono::system_clock::time_point now);

// Records a login at `now`; false with `error` if it could not.
bool record_login(const std::string& path, uid_t owner, std::chrono::system_clock::time_point now,
                  std::string& error);

}  // namespace popd::server
