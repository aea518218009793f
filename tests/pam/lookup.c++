// A PAM module for tests: its session and credential steps look up the
// user named by its argument (user=NAME) with getpwnam(), as a module that
// maps or checks another account might. A caller that kept getpwnam()'s
// static entry across PAM calls now holds that user's.
#include <pwd.h>
#include <security/pam_modules.h>

#include <cstring>

namespace {

int look_up(int argc, const char** argv) {
  for (int i = 0; i < argc; ++i)
    if (std::strncmp(argv[i], "user=", 5) == 0) ::getpwnam(argv[i] + 5);
  return PAM_SUCCESS;
}

}  // namespace

extern "C" {
int pam_sm_setcred(pam_handle_t*, int, int argc, const char** argv) { return look_up(argc, argv); }
int pam_sm_open_session(pam_handle_t*, int, int argc, const char** argv) { return look_up(argc, argv); }
int pam_sm_close_session(pam_handle_t*, int, int, const char**) { return PAM_SUCCESS; }
}
