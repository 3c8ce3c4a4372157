/* feed-proto.h: the messages of the JSON feed protocol (described in
 * ws-feed-server.c), read and written with cJSON: what the server makes of
 * a client's message and the answers it writes, what the client makes of
 * the server's messages and the ones it writes. No I/O and no keel calls,
 * so that tests/fuzz/feed_proto.c runs it as it is; ws-feed-server.c and
 * ws-client.c compile it too. */
#ifndef FEED_PROTO_H
#define FEED_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "keel/wsc.h"

/* Arrays and objects nest at most this deep in a message either side
 * reads: cJSON recurses once per level (up to 1000 levels), far more than
 * a task's 64 KiB stack holds. */
#define FEED_MAX_DEPTH 32

/* Sequence numbers and ids travel as JSON numbers, which cJSON reads as
 * doubles and writes with 15 significant digits (when those read back
 * within DBL_EPSILON): whole numbers are exact both ways up to 10^15. */
#define FEED_MAX_NUMBER 1e15

/* The message's JSON, or NULL when it is not JSON or nests deeper than
 * FEED_MAX_DEPTH. Free it with cJSON_Delete. */
cJSON *feed_parse(const void *data, size_t len);

/* Whether item is a whole number in [0, FEED_MAX_NUMBER], into *out. */
bool feed_whole_number(const cJSON *item, uint64_t *out);

/* ---- The server's side ---------------------------------------------------- */

typedef enum feed_op {
  FEED_OP_OTHER, /* answered "unknown op" */
  FEED_OP_AUTH,
  FEED_OP_SUB,
  FEED_OP_UNSUB,
  FEED_OP_REQ,
} feed_op_t;

/* A client's message; the pointers point into msg. */
typedef struct feed_request {
  cJSON *msg;
  feed_op_t op;
  const char *token;  /* AUTH: the token string, or NULL */
  const char *topic;  /* SUB, UNSUB: the topic string, or NULL */
  bool from_given;    /* SUB: a "from" other than null */
  bool from_ok;       /* SUB: ... and it is an update number below 10^18 */
  uint64_t from;      /* SUB, when from_ok */
  const cJSON *id;    /* REQ, OTHER: the id as given (any JSON), or NULL */
  const char *method; /* REQ: the method string, or NULL */
  const cJSON *params;
} feed_request_t;

/* Reads a client's text message into *r: 0 (free it with
 * feed_request_free), or -EPROTO when it is not JSON or nests too deep. */
int feed_request_parse(const void *data, size_t len, feed_request_t *r);
void feed_request_free(feed_request_t *r);

/* The server's messages, as text to free with cJSON_free (NULL: out of
 * memory): the auth answer (conn, the connection's number, when ok); a sub
 * or unsub answer (topic NULL: null; error NULL: ok); a request's answer
 * (id NULL: null; the result, or error when not NULL). */
char *feed_auth_answer(bool ok, uint64_t conn);
char *feed_topic_answer(const char *op, const char *topic, const char *error);
char *feed_answer(const cJSON *id, const cJSON *result, const char *error);
/* An update into out (cap bytes): false if it does not fit. */
bool feed_update(const char *topic, uint64_t seq, double value, char *out, size_t cap);

/* ---- The client's side ---------------------------------------------------- */

/* The client's messages, as text to free with cJSON_free (NULL: out of
 * memory); from NULL: a sub without "from". */
char *feed_auth(const char *token);
char *feed_sub(const char *topic, const uint64_t *from);
char *feed_unsub(const char *topic);

/* What the client keeps of the last message it classified: the strings
 * that keel_wsc_msg_t points to, and the server's connection number from
 * the last auth answer (-1: it had none; 0 before the first). */
typedef struct feed_reader {
  cJSON *msg;
  long conn;
} feed_reader_t;

/* keel_wsc_proto_t's classify for the feed (opcode aside): 0 with *m
 * filled in (not JSON: KEEL_WSC_UNKNOWN), or -EPROTO for a message that
 * breaks the protocol (an update without a topic string, an id or seq that
 * is not a whole number within FEED_MAX_NUMBER). What *m points to lives
 * until the next call or feed_reader_free. */
int feed_classify(feed_reader_t *r, const void *data, size_t len, keel_wsc_msg_t *m);
void feed_reader_free(feed_reader_t *r);

#endif
