/* keel: a structured-concurrency runtime for Linux network daemons. */
#ifndef KEEL_H
#define KEEL_H

#include "arena.h"
#include "blocking.h"
#include "broadcast.h"
#include "bufstream.h"
#include "chan.h"
#include "core.h"
#include "flow.h"
#include "http.h"
#include "lab.h"
#include "metrics.h"
#include "oneshot.h"
#include "stream.h"
#include "sync.h"
#include "tcp.h"
#include "tls.h"
#include "watch.h"
#include "ws.h"
#include "wsc.h"

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0

#endif
