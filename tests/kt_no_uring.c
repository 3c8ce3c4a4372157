/* Runs a program with io_uring_setup denied by a seccomp filter, as a
 * container that blocks io_uring would (tests/matrix_skip.sh):
 *   kt_no_uring PROGRAM [ARGUMENTS...]
 * Exits 77 (skipped) when the filter cannot be installed here. */
#include "keel-test.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PROGRAM [ARGUMENTS...]\n", argv[0]);
    return 2;
  }
  int rc = kt_deny_io_uring_setup();
  if (rc < 0) {
    fprintf(stderr, "# cannot install the seccomp filter: %s\n", strerror(-rc));
    return KT_SKIP_EXIT;
  }
  execvp(argv[1], argv + 1);
  fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
  return 127;
}
