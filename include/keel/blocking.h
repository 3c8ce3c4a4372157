/* keel/blocking.h: not written yet. */
