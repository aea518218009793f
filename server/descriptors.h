// The descriptors each process holds (DESIGN, "Which process holds what").
//
// inetd and xinetd give the client's socket as descriptors 0, 1 and 2, and
// systemd (Accept=yes) as 0 and 1 and once more as 3 (LISTEN_FDS). Left
// there, the socket would stay open in the root monitor and in the user's
// session (with TLS, the raw TCP socket beside the relay), and whatever a
// library or PAM module writes to standard error would reach the client in
// clear. So the socket sits on 0 and 1 of the process that talks to the
// client and nowhere else, /dev/null takes its place, and every child
// closes all it did not ask for (close_range).
#pragma once

#include <initializer_list>

namespace popd::server {

// At start: descriptors 0 to 2 open (/dev/null for a closed one), the
// client's socket off 2, and nothing above 2 but what popd opens itself.
void settle_standard_descriptors();

// /dev/null on `fd` (0, 1 or 2): the client's socket no longer is there.
void null_on(int fd);

// In a child right after fork: closes every descriptor but 0 to 2 and
// `keep`, and connects syslog anew (its old socket is closed too).
void close_all_but(std::initializer_list<int> keep);

}  // namespace popd::server
