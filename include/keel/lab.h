/* keel/lab.h: not written yet. */
