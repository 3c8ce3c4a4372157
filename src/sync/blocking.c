/* blocking: not written yet. */
#include "internal.h"

void keel__blocking_shutdown(keel_runtime_t *rt) { (void)rt; }
