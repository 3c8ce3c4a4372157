/* The HTTP fuzz targets' reference reading of chunked bodies (dechunk.c;
 * not installed). */
#ifndef FZ_DECHUNK_H
#define FZ_DECHUNK_H

#include <stddef.h>

/* A chunked body at p (n bytes), read as RFC 9112 §7.1 writes it: 0 when
 * it is complete and well-formed, 1 when the bytes end first, -1 when
 * malformed; *end: the bytes it used, the decoded bytes appended to *dec
 * (malloc'd; dec may be NULL). flags: FZ_DECHUNK_TRAILER_LF takes a bare
 * LF for the empty line that ends the trailer section. */
enum { FZ_DECHUNK_TRAILER_LF = 1u << 0 };
int fz_dechunk(const char *p, size_t n, unsigned flags, size_t *end, char **dec, size_t *dec_len);

#endif
