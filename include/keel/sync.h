/* keel/sync.h: not written yet. */
