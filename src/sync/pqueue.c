/* pqueue: not written yet. */
typedef int keel__unwritten_pqueue;
