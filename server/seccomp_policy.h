// The system calls the pre-auth process may make (server/sandbox.h).
#pragma once

#include <seccomp.h>

namespace popd::server {

// A new libseccomp filter of the policy; nullptr if it cannot be built.
// The caller releases it (seccomp_release).
scmp_filter_ctx pre_auth_policy();

}  // namespace popd::server
