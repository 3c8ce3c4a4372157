/* keel/wsc.h -- the reconnecting WebSocket client.
 *
 * A long-lived connection to a service (an exchange, a broker, a push
 * API) that reconnects by itself, authenticates again, subscribes again,
 * and never leaves a request hanging or answers it twice.
 *
 * One owner task per client, spawned into a scope of the caller's
 * (structured: closing that scope ends the client), alone reads and writes
 * the WebSocket. Callers, on any worker, share the client through handles
 * (keel_wsc_ref / keel_wsc_release) and talk to the owner through two
 * queues: control (close, reconnect) is always served before data (send,
 * request, subscribe, unsubscribe). The owner waits on the socket, the
 * queues and its timers at once with a keel_alert.
 *
 * Epochs: a counter that rises on each connection that gets through the
 * connect sequence. Everything tied to a connection carries its epoch: a
 * request sent on epoch 3 is failed (-ECONNRESET) when epoch 3 ends, and a
 * response can only complete a request of the epoch it came on.
 *
 * Connect sequence, on one socket (a second connection while one is live
 * cannot happen: only the owner connects, one attempt at a time): the
 * protocol's on-connect messages, then its auth message if it has one,
 * then the auth answer awaited (request_timeout_ms), then a subscribe for
 * every topic with a live subscription (with the resume point, the last
 * sequence number seen plus one, when the protocol's updates carry one),
 * then the event `connected{epoch}`, and only then queued data.
 *
 * Losing the connection (an error, the peer's close, no pong within
 * pong_timeout_ms): the event `disconnected{epoch, reason}`; every request
 * pending on that epoch fails at once with -ECONNRESET, except idempotent
 * ones, which are sent again on the next epoch (up to resend_limit
 * times); then a backoff with full jitter:
 *     delay = random(0, min(backoff_max, backoff_initial * factor^(n-1)))
 * for the n-th failure in a row (keel_random: seeded, and so replayable,
 * in lab mode), then the next attempt. n goes back to 0 after a connection
 * that got through auth. After max_attempts failures in a row (0: never
 * give up) the client gives up: the event `gave_up`, every caller gets
 * -ESHUTDOWN, the owner ends.
 *
 * Nothing written to a lost connection is written again except idempotent
 * requests; a send or request made while the client is between
 * connections waits in the queue (under the caller's own deadline) and is
 * written on the next one.
 *
 * The protocol is the application's: keel_wsc_proto_t builds auth,
 * subscribe and unsubscribe messages and classifies what arrives.
 *
 * Memory: a request costs no allocation and no task: its entry lives in
 * the caller's frame while it waits; the message is copied into the
 * owner's write buffer, the response into the caller's buffer. */
#ifndef KEEL_WSC_H
#define KEEL_WSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keel/core.h"
#include "keel/ws.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_wsc keel_wsc_t;
typedef struct keel_wsc_sub keel_wsc_sub_t;

/* ---- The protocol ------------------------------------------------------------ */

/* A message being built for the owner to send (text unless set). */
typedef struct keel_wsc_out keel_wsc_out_t;
int keel_wsc_out_append(keel_wsc_out_t *o, const void *data, size_t len);
int keel_wsc_out_printf(keel_wsc_out_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void keel_wsc_out_set_opcode(keel_wsc_out_t *o, int opcode);

typedef enum keel_wsc_kind {
  KEEL_WSC_UNKNOWN = 0, /* given to the application as an event */
  KEEL_WSC_SYSTEM,      /* given to the application as an event */
  KEEL_WSC_CONTROL,     /* given to the application as an event */
  KEEL_WSC_IGNORE,      /* dropped (a subscribe's acknowledgement, say) */
  KEEL_WSC_AUTH_OK,
  KEEL_WSC_AUTH_FAILED,
  KEEL_WSC_RESPONSE, /* completes the request with id */
  KEEL_WSC_UPDATE,   /* goes to the subscriptions of topic */
} keel_wsc_kind_t;

/* What classify says of a message. topic may point into the message (or
 * into the protocol's memory) until classify is called again. */
typedef struct keel_wsc_msg {
  keel_wsc_kind_t kind;
  uint64_t id;       /* RESPONSE */
  bool error;        /* RESPONSE: an error answer (the request gets -EREMOTEIO) */
  const char *topic; /* UPDATE */
  size_t topic_len;  /* UPDATE */
  uint64_t seq;      /* UPDATE, when has_seq: the topic's sequence number */
  bool has_seq;
  const char *reason; /* AUTH_FAILED: why (copied), or NULL */
  size_t reason_len;
} keel_wsc_msg_t;

typedef struct keel_wsc_proto {
  void *ctx;
  /* Optional: the messages to send first on every connection, one per
   * call (index 0, 1, ...): 1 if it wrote one, 0 when done. */
  int (*on_connect)(void *ctx, uint64_t epoch, unsigned index, keel_wsc_out_t *out);
  /* Optional: the auth message; 1 if it wrote one (its answer is then
   * awaited), 0 for none. */
  int (*auth)(void *ctx, keel_wsc_out_t *out);
  /* Required if subscriptions are used. from: the resume point (the last
   * sequence number seen on the topic plus one), or NULL. */
  int (*subscribe)(void *ctx, const char *topic, const uint64_t *from, keel_wsc_out_t *out);
  int (*unsubscribe)(void *ctx, const char *topic, keel_wsc_out_t *out);
  /* Required: classifies a message (text or binary). A negative errno
   * drops the connection as a protocol error (reason "protocol"). */
  int (*classify)(void *ctx, int opcode, const void *data, size_t len, keel_wsc_msg_t *m);
} keel_wsc_proto_t;

/* ---- Options ------------------------------------------------------------------ */

typedef enum keel_wsc_overflow {
  KEEL_WSC_DROP_OLDEST = 0, /* a full subscription queue evicts its oldest update */
  KEEL_WSC_DROP_NEWEST,     /* ... or drops the update arriving */
} keel_wsc_overflow_t;

/* Zeroed: every default. Times in milliseconds. */
typedef struct keel_wsc_opts {
  const char *url;            /* ws:// or wss:// (required; copied) */
  const keel_ws_opts_t *ws;   /* headers, origin, TLS, subprotocols, deflate,
                               * max_message, resolve (its ping fields are
                               * this struct's); must outlive the client */
  int64_t connect_timeout_ms; /* one attempt, TCP + TLS + upgrade; 0: 10 s */
  int64_t request_timeout_ms; /* a request's default, and the auth wait; 0: 10 s */
  int64_t ping_interval_ms;   /* ping after this long without a byte; 0: 15 s, < 0: none */
  int64_t pong_timeout_ms;    /* reconnect ("pong timeout") after; 0: 10 s */
  int64_t backoff_initial_ms; /* 0: 500 ms */
  int64_t backoff_max_ms;     /* 0: 30 s */
  double backoff_factor;      /* 0: 2 */
  bool no_jitter;             /* the full ceiling every time (tests) */
  unsigned max_attempts;      /* failures in a row before giving up; 0: never */
  unsigned resend_limit;      /* idempotent requests: sends at most 1 + this; 0: 3 */
  /* Events (keel_wsc_event): delivered only when events is set. Lifecycle
   * events are never dropped (the owner waits for room); messages are
   * offered without waiting and counted when dropped. */
  bool events;
  size_t event_capacity;            /* 0: 256 */
  size_t sub_capacity;              /* updates queued per subscription; 0: 256 */
  keel_wsc_overflow_t sub_overflow; /* when that queue is full */
  const char *name;                 /* the owner task's name; NULL: "wsc" */
} keel_wsc_opts_t;

/* ---- Life ------------------------------------------------------------------------ */

/* Starts a client: the owner task in a scope under `scope` (NULL: the
 * calling task's), connecting at once. *out is the first handle. Returns
 * -EINVAL (no url or classify, a bad URL), -ENOMEM. */
int keel_wsc_open(keel_scope_t *scope, const keel_wsc_opts_t *opts, const keel_wsc_proto_t *proto,
                  keel_wsc_t **out);
/* Another handle on the same client (the same pointer, counted). */
keel_wsc_t *keel_wsc_ref(keel_wsc_t *c);
/* Releases a handle. The last one shuts the client down: a close frame
 * (1000) sent, pending requests failed (-ESHUTDOWN), the owner ended,
 * within 1 s. A call still running in another task on the same pointer
 * keeps the memory until it returns (-ESHUTDOWN); nothing may start on a
 * released handle. Guards keep it too, until they are released. */
void keel_wsc_release(keel_wsc_t *c);
/* Control: asks the owner to shut down now (as the last release would),
 * or to drop the connection and connect again (reason reported in the
 * disconnected event). Served before any data. */
int keel_wsc_close(keel_wsc_t *c);
int keel_wsc_reconnect(keel_wsc_t *c, const char *reason);

/* The current epoch (0 before the first connection) and whether a
 * connection is up (through its connect sequence). */
uint64_t keel_wsc_epoch(const keel_wsc_t *c);
bool keel_wsc_connected(const keel_wsc_t *c);

/* ---- Data ------------------------------------------------------------------------ */

/* Sends a message (opcode 0: text) once a connection is up: returns 0
 * when the owner has taken it for writing, or -ESHUTDOWN, -ECANCELED,
 * -ETIMEDOUT (the caller's deadline), -EMSGSIZE. */
int keel_wsc_send(keel_wsc_t *c, int opcode, const void *data, size_t len);

typedef struct keel_wsc_req {
  uint64_t id;      /* what classify reports for its response */
  const void *data; /* the request message, with the id in it */
  size_t len;
  int opcode;         /* 0: text */
  bool idempotent;    /* sent again on the next epoch instead of failed */
  int64_t timeout_ms; /* 0: request_timeout_ms; < 0: only the task's deadline */
  void *resp;         /* the response is copied here (NULL: the outcome only) */
  size_t resp_cap;
  /* Out: */
  size_t resp_len; /* the response's length (more than resp_cap: -EMSGSIZE) */
  uint64_t epoch;  /* the connection it was (last) sent on, 0 if never */
  unsigned sends;  /* times written */
  const char *why; /* a short reason with every failure */
} keel_wsc_req_t;

/* Sends r and waits for its response. 0: answered (resp filled);
 * -EREMOTEIO: answered with an error (resp filled); -ECONNRESET: the
 * connection it was sent on was lost; -ETIMEDOUT: no answer in time (a
 * late answer is dropped, never given to a later request with the same
 * id); -ECANCELED; -EEXIST: a request with that id is pending;
 * -EMSGSIZE: the response did not fit resp_cap (resp_len says how long it
 * was); -ESHUTDOWN: the client closed or gave up. */
int keel_wsc_request(keel_wsc_t *c, keel_wsc_req_t *r);

/* ---- Subscriptions -------------------------------------------------------------- */

/* A guard on topic, with its own queue of updates. The first live guard
 * of a topic makes the owner send the subscribe message; the last one
 * unsubscribed or released, the unsubscribe message. Returns -ESHUTDOWN,
 * -ENOMEM, -EINVAL. */
int keel_wsc_subscribe(keel_wsc_t *c, const char *topic, keel_wsc_sub_t **out);

typedef struct keel_wsc_update {
  uint64_t seq; /* when has_seq */
  bool has_seq;
  uint64_t epoch;   /* the connection it came on */
  size_t len;       /* the update's length (more than the buffer: -EMSGSIZE, dropped) */
  uint64_t dropped; /* updates of this guard dropped so far (queue full) */
  int opcode;
} keel_wsc_update_t;

/* The next update of the guard's topic, copied into buf: its length, or
 * -EMSGSIZE, -ESHUTDOWN (the client ended and the queue is empty),
 * -ENOTCONN (unsubscribed and empty), -ECANCELED, -ETIMEDOUT. */
ssize_t keel_wsc_sub_recv(keel_wsc_sub_t *s, void *buf, size_t cap, keel_wsc_update_t *u);
/* Ends the guard's interest (the unsubscribe goes out if it was the last
 * live one); queued updates stay readable. Releasing it afterwards sends
 * nothing more. */
int keel_wsc_unsubscribe(keel_wsc_sub_t *s);
void keel_wsc_sub_release(keel_wsc_sub_t *s);
const char *keel_wsc_sub_topic(const keel_wsc_sub_t *s);

/* ---- Events ----------------------------------------------------------------------- */

typedef enum keel_wsc_event_type {
  KEEL_WSC_EV_CONNECTED = 1,  /* epoch */
  KEEL_WSC_EV_DISCONNECTED,   /* epoch, err, reason, delay_ms (the backoff drawn) */
  KEEL_WSC_EV_CONNECT_FAILED, /* an attempt failed: err, reason, attempt, delay_ms */
  KEEL_WSC_EV_MESSAGE,        /* kind, opcode, data (malloc'd: free it), len */
  KEEL_WSC_EV_GAVE_UP,        /* max_attempts reached: err, reason */
  KEEL_WSC_EV_CLOSED,         /* the owner ended: the last event */
} keel_wsc_event_type_t;

typedef struct keel_wsc_event {
  keel_wsc_event_type_t type;
  uint64_t epoch;
  int64_t at_ns; /* when it happened (keel_now_ns) */
  int err;
  char reason[96];
  unsigned attempt;
  int64_t delay_ms;
  keel_wsc_kind_t kind;
  int opcode;
  void *data;
  size_t len;
} keel_wsc_event_t;

/* The next event (opts.events): 0, or -EPIPE after the CLOSED event (or
 * with events off), -ECANCELED, -ETIMEDOUT. */
int keel_wsc_event(keel_wsc_t *c, keel_wsc_event_t *ev);

/* ---- Counters ----------------------------------------------------------------------- */

typedef struct keel_wsc_stats {
  uint64_t epoch;
  uint64_t connects;          /* connections opened (TCP + upgrade done) */
  uint64_t reconnects;        /* connections that got through auth, after the first */
  uint64_t failures;          /* connect attempts or connections that failed */
  uint64_t requests_sent;     /* writes of requests (re-sends included) */
  uint64_t responses;         /* responses that completed a request */
  uint64_t responses_dropped; /* responses for no pending request (late, unknown id) */
  uint64_t requests_failed;   /* requests failed by a disconnect */
  uint64_t resent;            /* idempotent re-sends */
  uint64_t events_dropped;    /* message events dropped (queue full) */
  uint64_t updates;           /* updates routed */
  uint64_t updates_dropped;   /* updates dropped from full subscription queues */
  size_t pending;             /* requests awaiting a response now */
  size_t topics;              /* topics with a live subscription */
} keel_wsc_stats_t;

void keel_wsc_stats(keel_wsc_t *c, keel_wsc_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
