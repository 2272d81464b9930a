/* hnsw.h — approximate nearest-neighbour index (Hierarchical Navigable Small World
 * graph, Malkov & Yashunin) over float32 vectors.
 *
 * Elements are identified by caller-chosen 64-bit labels; the index maps them to
 * internal slot ids of its own (which callers never see). Each slot is one block
 * of memory holding the vector, the label and the level-0 links; the distance
 * kernel for the metric and the CPU is chosen once, at creation.
 *
 * Metrics (enum sx_metric, core/math/vec.h): SX_METRIC_L2 (distance = squared L2),
 * SX_METRIC_IP (1 - a·b), SX_METRIC_COSINE (1 - cos; vectors are normalised on
 * insertion and queries on search, so a zero vector is refused). Results are
 * ordered nearest first, ties by label.
 *
 * Deletion marks a slot deleted: from that call on it never appears in a result,
 * its label is free again, and the slot is reused by a later insertion (which
 * relinks it and repairs the links of its old neighbours). Inserting a label that
 * is present replaces its vector and relinks it (an update).
 *
 * Threads: an index is not internally synchronised against concurrent mutation.
 * Any number of threads may call the const functions (search, get, count, save)
 * at the same time; any other call (add, add_batch, delete, set_*, free) must be
 * exclusive: no other call on the same index may run during it. add_batch uses
 * its own worker threads internally and returns when they are done.
 *
 * Errors: SX_EINVAL for bad arguments (wrong sizes, NaN/Inf components, k = 0),
 * SX_ENOMEM, SX_ENOENT for an unknown label, SX_E2BIG past 2^32 - 2 slots,
 * SX_ECORRUPT for a serialized index that fails validation. The message is in
 * sx_diag_last(). A failed call leaves the index as it was, except add_batch (see
 * there).
 */
#ifndef SX_MATH_HNSW_H
#define SX_MATH_HNSW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <roaring/roaring.h>

#include "core/math/vec.h"

struct sx_hnsw;

struct sx_hnsw_params {
	int metric;               /* enum sx_metric */
	uint32_t dim;             /* 1 .. 65536 */
	uint32_t M;               /* links per node above level 0 (2M at level 0); 2 .. 128, default 16 */
	uint32_t ef_construction; /* candidate list size while inserting; >= 1, default 200 */
	uint32_t ef_search;       /* default candidate list size of a search; >= 1, default 64 */
	uint64_t seed;            /* level draws; same seed + same single-thread inserts = same graph */
	double exact_threshold;   /* filtered searches whose allowed fraction is below this run exact; default 0.02 */
	size_t capacity;          /* initial slots (grows on demand); default 1024 */
};

/* Fills p with the defaults above for the given metric and dimension. */
void sx_hnsw_params_init(struct sx_hnsw_params *p, int metric, uint32_t dim);

/* A new empty index, or NULL (SX_EINVAL for bad params, SX_ENOMEM). p is copied. */
struct sx_hnsw *sx_hnsw_new(const struct sx_hnsw_params *p);
void sx_hnsw_free(struct sx_hnsw *h);

/* Inserts vec (dim floats, copied) under label, or replaces the vector of an
 * existing label (update). SX_EINVAL if dim is not the index's, vec has a NaN or
 * Inf component, or is zero under the cosine metric; nothing is inserted then. */
int sx_hnsw_add(struct sx_hnsw *h, uint64_t label, const float *vec, size_t dim);

/* Inserts n vectors (n x dim floats, row-major) with nthreads worker threads
 * (nthreads <= 1: the caller's thread only). Equivalent to n calls of sx_hnsw_add
 * in order (later duplicates of a label win), up to the randomness of concurrent
 * linking. Every vector is checked first: if any is invalid, SX_EINVAL and nothing
 * is inserted. On SX_ENOMEM part of the batch may have been inserted. */
int sx_hnsw_add_batch(struct sx_hnsw *h, const uint64_t *labels, const float *vecs, size_t n, size_t dim,
		      int nthreads);

/* Removes label: it is excluded from every later search. SX_ENOENT if absent. */
int sx_hnsw_delete(struct sx_hnsw *h, uint64_t label);

/* Copies label's stored vector to out (dim floats; unit-norm under cosine).
 * SX_ENOENT if absent, SX_EINVAL if dim is not the index's. */
int sx_hnsw_get(const struct sx_hnsw *h, uint64_t label, float *out, size_t dim);
bool sx_hnsw_contains(const struct sx_hnsw *h, uint64_t label);

size_t sx_hnsw_count(const struct sx_hnsw *h); /* live (not deleted) elements */
uint32_t sx_hnsw_dim(const struct sx_hnsw *h);
int sx_hnsw_metric(const struct sx_hnsw *h);
/* Bytes held by the index (blocks, links, label map, scratch). */
size_t sx_hnsw_memory(const struct sx_hnsw *h);

int sx_hnsw_set_ef(struct sx_hnsw *h, uint32_t ef);                  /* default ef_search, >= 1 */
int sx_hnsw_set_exact_threshold(struct sx_hnsw *h, double fraction); /* 0 .. 1 */

/* A search filter; a result must pass every part that is set.
 *
 * labels: allowed labels. CRoaring 0.2 has 32-bit bitmaps only, so the filter is
 *   over the 32-bit label domain: an element whose label is >= 2^32 never passes
 *   a bitmap filter. Borrowed for the call; must not change during it.
 * allow_cb: predicate on a label, called from the searching thread, possibly more
 *   than once per label; must not call into the index being searched.
 *
 * Selectivity: with a bitmap, allowed fraction = cardinality / count; below the
 * index's exact_threshold (or when no more than max(k, ef) labels are allowed) the
 * search scans the allowed labels exactly instead of walking the graph. With only
 * a predicate, the fraction is estimated on a sample of up to 256 elements.
 * A graph search under a filter keeps walking until it holds ef allowed results
 * or runs out of reachable nodes, so recall holds at moderate selectivity. */
struct sx_hnsw_filter {
	const roaring_bitmap_t *labels;
	bool (*allow_cb)(uint64_t label, void *arg);
	void *arg;
};

/* The k nearest live elements to q (dim floats, the index's) that pass filter (NULL: all).
 * ef: candidate list size (0 = the index default; raised to k if smaller).
 * Writes up to k labels and distances (dists may be NULL), nearest first, and
 * their number to *n_found (fewer than k only if fewer elements qualify).
 * SX_EINVAL for k = 0, a wrong dim, a NaN/Inf in q, or a zero q under cosine. */
int sx_hnsw_search(const struct sx_hnsw *h, const float *q, size_t dim, size_t k, uint32_t ef,
		   const struct sx_hnsw_filter *filter, uint64_t *labels, float *dists,
		   size_t *n_found);

/* Serialization. The format is versioned, little-endian, and ends with a 64-bit
 * checksum of everything before it. Saving is a const operation.
 * The writer returns 0 or a negative SX_E* code, which aborts the save and is
 * returned; it is never called after it fails. */
typedef int (*sx_hnsw_write_cb)(void *arg, const void *data, size_t len);
int sx_hnsw_save(const struct sx_hnsw *h, sx_hnsw_write_cb write_cb, void *arg);

/* Saves into a malloc'd buffer, owned by the caller (free()). */
int sx_hnsw_save_buf(const struct sx_hnsw *h, void **buf, size_t *len);

/* Exact size in bytes of what sx_hnsw_save writes. */
size_t sx_hnsw_serialized_size(const struct sx_hnsw *h);

/* An index rebuilt from buf (borrowed for the call), or NULL: SX_ECORRUPT if the
 * buffer is truncated, has a bad checksum or any field out of range (counts,
 * levels, link ids, labels), SX_EPROTO for an unknown format version, SX_ENOMEM. */
struct sx_hnsw *sx_hnsw_load(const void *buf, size_t len);

/* Internal, for tests: the checksum sx_hnsw_save appends, over len bytes. */
uint64_t sx__hnsw_checksum(const void *buf, size_t len);

#endif
