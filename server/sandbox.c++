#include "server/sandbox.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <iterator>

#include "sys/file.h"
#include "io/ring.h"
#include "params.h"
#include "pre_auth_filter.h"  // generated: tools/seccomp-filter.c++

namespace popd::server {
namespace {

[[maybe_unused]] bool limit(int resource, rlim_t value) {
  rlimit both{value, value};
  return ::setrlimit(resource, &both) == 0;
}

// The policy of server/seccomp_policy.c++, compiled when popd was built.
[[maybe_unused]] bool load_filter(std::string& error) {
  sock_fprog program{static_cast<unsigned short>(std::size(pre_auth_filter)), const_cast<sock_filter*>(pre_auth_filter)};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    error = "cannot load the seccomp filter: " + sys::error_text(errno);
    return false;
  }
  return true;
}

}  // namespace

bool confine_pre_auth(std::string& error) {
#if defined(__SANITIZE_ADDRESS__)
  (void)error;
  return true;
#else
  // RLIMIT_FSIZE bounds what memfds hold (RLIMIT_AS does not count it):
  // the ring's is the only one it needs.
  if (!limit(RLIMIT_NPROC, 0) || !limit(RLIMIT_NOFILE, params::pre_auth_descriptors) ||
      !limit(RLIMIT_AS, params::pre_auth_memory) || !limit(RLIMIT_FSIZE, io::Ring::file_size()) ||
      !limit(RLIMIT_CORE, 0)) {
    error = "cannot set the pre-login process's limits: " + sys::error_text(errno);
    return false;
  }
  return load_filter(error);
#endif
}

}  // namespace popd::server
