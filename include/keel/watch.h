/* keel/watch.h: not written yet. */
