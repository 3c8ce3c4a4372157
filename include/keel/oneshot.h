/* keel/oneshot.h: not written yet. */
