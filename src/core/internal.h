/* Internal header of src/core: every private header of the kernel. Files
 * of the layers above include only the ones they use. */
#ifndef KEEL_INTERNAL_H
#define KEEL_INTERNAL_H

#include "backend.h"
#include "fiber.h"
#include "lab-internal.h"
#include "msg.h"
#include "queue.h"
#include "scope.h"
#include "spin.h"
#include "task.h"
#include "wait.h"
#include "worker.h"

#endif
