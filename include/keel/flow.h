/* keel/flow.h: not written yet. */
