/* libFuzzer target: keel's HTTP/1.1 server, fed whatever a client may
 * send (http_server.c runs the connection and checks it).
 *
 * The input: FZ_CTRL control bytes (http_server.c), then the bytes the
 * client sends. */
#include "fuzz-http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FZ_CTRL)
    return 0;
  fz_run_t run;
  fz_http_run(data, data + FZ_CTRL, size - FZ_CTRL, &run);
  fz_run_free(&run);
  return 0;
}
