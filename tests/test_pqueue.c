/* test_pqueue: not written yet; fails until it is. */
#include <stdio.h>
int main(void) {
  fputs("test_pqueue: not written yet\n", stderr);
  return 1;
}
