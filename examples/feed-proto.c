/* feed-proto.c: the feed protocol's messages (feed-proto.h). */
#include "feed-proto.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* Counting the brackets outside strings is enough: cJSON stops at the
 * first one that does not match, and reads strings (escapes included) as
 * this does. */
static bool depth_ok(const char *p, size_t len, int max) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < len; i++) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (p[i] == '\\')
        escaped = true;
      else if (p[i] == '"')
        in_string = false;
    } else if (p[i] == '"') {
      in_string = true;
    } else if ((p[i] == '[' || p[i] == '{') && ++depth > max) {
      return false;
    } else if (p[i] == ']' || p[i] == '}') {
      depth--;
    }
  }
  return true;
}

cJSON *feed_parse(const void *data, size_t len) {
  return depth_ok(data, len, FEED_MAX_DEPTH) ? cJSON_ParseWithLength(data, len) : NULL;
}

bool feed_whole_number(const cJSON *item, uint64_t *out) {
  if (!cJSON_IsNumber(item))
    return false;
  double v = item->valuedouble;
  /* The range first: converting a double out of uint64_t's range is
   * undefined. */
  if (!(v >= 0 && v <= FEED_MAX_NUMBER) || (double)(uint64_t)v != v)
    return false;
  *out = (uint64_t)v;
  return true;
}

static const cJSON *member(const cJSON *msg, const char *name) {
  return cJSON_GetObjectItemCaseSensitive(msg, name);
}

static const char *string_member(const cJSON *msg, const char *name) {
  return cJSON_GetStringValue(member(msg, name));
}

/* The text of msg, which it frees; NULL if msg is (out of memory). */
static char *text_of(cJSON *msg, bool ok) {
  char *text = msg && ok ? cJSON_PrintUnformatted(msg) : NULL;
  cJSON_Delete(msg);
  return text;
}

/* ---- The server's side ---------------------------------------------------- */

static feed_op_t op_of(const char *op) {
  if (!op)
    return FEED_OP_OTHER;
  if (strcmp(op, "auth") == 0)
    return FEED_OP_AUTH;
  if (strcmp(op, "sub") == 0)
    return FEED_OP_SUB;
  if (strcmp(op, "unsub") == 0)
    return FEED_OP_UNSUB;
  if (strcmp(op, "req") == 0)
    return FEED_OP_REQ;
  return FEED_OP_OTHER;
}

int feed_request_parse(const void *data, size_t len, feed_request_t *r) {
  memset(r, 0, sizeof *r);
  r->msg = feed_parse(data, len);
  if (!r->msg)
    return -EPROTO;
  r->op = op_of(string_member(r->msg, "op"));
  r->id = member(r->msg, "id");
  switch (r->op) {
  case FEED_OP_AUTH:
    r->token = string_member(r->msg, "token");
    break;
  case FEED_OP_SUB:
  case FEED_OP_UNSUB: {
    r->topic = string_member(r->msg, "topic");
    const cJSON *from = member(r->msg, "from");
    r->from_given = r->op == FEED_OP_SUB && from && !cJSON_IsNull(from);
    r->from_ok =
        r->from_given && cJSON_IsNumber(from) && from->valuedouble >= 0 && from->valuedouble < 1e18;
    if (r->from_ok)
      r->from = (uint64_t)from->valuedouble;
    break;
  }
  case FEED_OP_REQ:
    r->method = string_member(r->msg, "method");
    r->params = member(r->msg, "params");
    break;
  case FEED_OP_OTHER:
    break;
  }
  return 0;
}

void feed_request_free(feed_request_t *r) {
  cJSON_Delete(r->msg);
  r->msg = NULL;
}

char *feed_auth_answer(bool ok, uint64_t conn) {
  cJSON *msg = cJSON_CreateObject();
  bool built = cJSON_AddStringToObject(msg, "op", "auth") && cJSON_AddBoolToObject(msg, "ok", ok);
  if (ok)
    built = built && cJSON_AddNumberToObject(msg, "conn", (double)conn);
  else
    built = built && cJSON_AddStringToObject(msg, "error", "bad token");
  return text_of(msg, built);
}

/* Adds item to msg as name, or frees it. */
static bool add_item(cJSON *msg, const char *name, cJSON *item) {
  if (item && cJSON_AddItemToObject(msg, name, item))
    return true;
  cJSON_Delete(item);
  return false;
}

/* value's copy (NULL: null) as name in msg. */
static bool add_copy(cJSON *msg, const char *name, const cJSON *value) {
  return add_item(msg, name, value ? cJSON_Duplicate(value, true) : cJSON_CreateNull());
}

char *feed_topic_answer(const char *op, const char *topic, const char *error) {
  cJSON *msg = cJSON_CreateObject();
  bool built = cJSON_AddStringToObject(msg, "op", op) &&
               add_item(msg, "topic", topic ? cJSON_CreateString(topic) : cJSON_CreateNull()) &&
               cJSON_AddBoolToObject(msg, "ok", !error);
  if (error)
    built = built && cJSON_AddStringToObject(msg, "error", error);
  return text_of(msg, built);
}

char *feed_answer(const cJSON *id, const cJSON *result, const char *error) {
  cJSON *msg = cJSON_CreateObject();
  bool built = add_copy(msg, "id", id);
  if (error)
    built = built && cJSON_AddStringToObject(msg, "error", error);
  else
    built = built && add_copy(msg, "result", result);
  return text_of(msg, built);
}

bool feed_update(const char *topic, uint64_t seq, double value, char *out, size_t cap) {
  cJSON *msg = cJSON_CreateObject(), *data;
  bool built = cJSON_AddStringToObject(msg, "op", "update") &&
               cJSON_AddStringToObject(msg, "topic", topic) &&
               cJSON_AddNumberToObject(msg, "seq", (double)seq) &&
               (data = cJSON_AddObjectToObject(msg, "data")) != NULL &&
               cJSON_AddNumberToObject(data, "value", value) && cap <= INT_MAX &&
               cJSON_PrintPreallocated(msg, out, (int)cap, false);
  cJSON_Delete(msg);
  return built;
}

/* ---- The client's side ---------------------------------------------------- */

char *feed_auth(const char *token) {
  cJSON *msg = cJSON_CreateObject();
  return text_of(msg, cJSON_AddStringToObject(msg, "op", "auth") &&
                          cJSON_AddStringToObject(msg, "token", token));
}

static char *topic_message(const char *op, const char *topic, const uint64_t *from) {
  cJSON *msg = cJSON_CreateObject();
  bool built =
      cJSON_AddStringToObject(msg, "op", op) && cJSON_AddStringToObject(msg, "topic", topic);
  if (from)
    built = built && cJSON_AddNumberToObject(msg, "from", (double)*from);
  return text_of(msg, built);
}

char *feed_sub(const char *topic, const uint64_t *from) {
  return topic_message("sub", topic, from);
}

char *feed_unsub(const char *topic) { return topic_message("unsub", topic, NULL); }

static void classify_auth(feed_reader_t *r, keel_wsc_msg_t *m) {
  const cJSON *conn = member(r->msg, "conn");
  const char *error = string_member(r->msg, "error");
  uint64_t number;
  r->conn = feed_whole_number(conn, &number) ? (long)number : -1;
  m->kind = cJSON_IsTrue(member(r->msg, "ok")) ? KEEL_WSC_AUTH_OK : KEEL_WSC_AUTH_FAILED;
  if (error) {
    m->reason = error;
    m->reason_len = strlen(error);
  }
}

static int classify_update(feed_reader_t *r, keel_wsc_msg_t *m) {
  const char *topic = string_member(r->msg, "topic");
  const cJSON *seq = member(r->msg, "seq");
  if (!topic)
    return -EPROTO;
  m->kind = KEEL_WSC_UPDATE;
  m->topic = topic;
  m->topic_len = strlen(topic);
  if (cJSON_IsNumber(seq) && !(m->has_seq = feed_whole_number(seq, &m->seq)))
    return -EPROTO;
  return 0;
}

int feed_classify(feed_reader_t *r, const void *data, size_t len, keel_wsc_msg_t *m) {
  cJSON_Delete(r->msg); /* the strings of the last message were valid until now */
  r->msg = feed_parse(data, len);
  if (!r->msg || !cJSON_IsObject(r->msg)) {
    m->kind = KEEL_WSC_UNKNOWN;
    return 0;
  }
  const char *op = string_member(r->msg, "op");
  const cJSON *id = member(r->msg, "id");
  op = op ? op : "";
  if (strcmp(op, "auth") == 0) {
    classify_auth(r, m);
  } else if (cJSON_IsNumber(id)) {
    if (!feed_whole_number(id, &m->id))
      return -EPROTO;
    m->kind = KEEL_WSC_RESPONSE;
    m->error = member(r->msg, "error") != NULL;
  } else if (strcmp(op, "update") == 0) {
    return classify_update(r, m);
  } else if (strcmp(op, "sub") == 0 || strcmp(op, "unsub") == 0) {
    m->kind = cJSON_IsTrue(member(r->msg, "ok")) ? KEEL_WSC_IGNORE : KEEL_WSC_CONTROL;
  } else {
    m->kind = KEEL_WSC_SYSTEM;
  }
  return 0;
}

void feed_reader_free(feed_reader_t *r) {
  cJSON_Delete(r->msg);
  r->msg = NULL;
}
