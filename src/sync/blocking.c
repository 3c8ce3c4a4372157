/* blocking: not written yet. */
typedef int keel__unwritten_blocking;
