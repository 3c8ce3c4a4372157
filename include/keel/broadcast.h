/* keel/broadcast.h: not written yet. */
