/* The machinery of the accuracy sweep that the prediction log (accuracy.c)
 * and the forecast log (fcaccuracy.c) share: a resumable pass over a log in
 * chunks, and sums gathered per store key while a chunk runs, merged into the
 * stored ones when it ends. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/plugin.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"
#include "store/store.h"

struct sx_pred_pend {
	uint8_t *key; /* klen bytes, then the sums */
	size_t klen;
};

static void *sums_of(const struct sx_pred_pend *e) { return e->key + ((e->klen + 15) & ~(size_t)15); }

void *sx__pred_pass_sums(struct sx_pred_pass *p, const uint8_t *k, size_t klen)
{
	for (size_t i = 0; i < p->npend; i++)
		if (p->pend[i].klen == klen && memcmp(p->pend[i].key, k, klen) == 0)
			return sums_of(&p->pend[i]);
	if (p->npend == p->cappend) {
		size_t nc = p->cappend ? p->cappend * 2 : 16;
		struct sx_pred_pend *np = realloc(p->pend, nc * sizeof(*np));
		if (!np)
			goto oom;
		p->pend = np, p->cappend = nc;
	}
	struct sx_pred_pend *e = &p->pend[p->npend];
	e->klen = klen;
	if (!(e->key = calloc(1, ((klen + 15) & ~(size_t)15) + p->type->size)))
		goto oom;
	memcpy(e->key, k, klen);
	p->npend++;
	return sums_of(e);
oom:
	sx_diag_set(SX_ENOMEM, "out of memory");
	return NULL;
}

static int pend_write(struct sx_pred_pass *p, struct sx_store *st)
{
	const struct sx_pred_sums_type *t = p->type;
	void *prev = malloc(t->size + t->bytes);
	uint8_t *v = (uint8_t *)prev + t->size;
	if (!prev)
		return sx_diag_set(SX_ENOMEM, "out of memory");
	int rc = 0;
	for (size_t i = 0; i < p->npend && rc == 0; i++) {
		struct sx_pred_pend *e = &p->pend[i];
		struct sx_val old;
		if (sx_store_get(st, SX_T_SERIES, e->key, e->klen, &old) == 0) {
			if (t->decode(prev, old.data, old.len) == 0)
				t->merge(sums_of(e), prev);
			else
				sx_log_error("predict: replacing undecodable %s", t->what);
		}
		t->encode(sums_of(e), v);
		rc = sx_store_put(st, SX_T_SERIES, e->key, e->klen, v, t->bytes);
	}
	free(prev);
	return rc;
}

static void pend_free(struct sx_pred_pass *p)
{
	for (size_t i = 0; i < p->npend; i++)
		free(p->pend[i].key);
	free(p->pend);
	p->pend = NULL, p->npend = p->cappend = 0;
}

static int visit(const struct sx_val *key, const struct sx_val *val, void *ud)
{
	struct sx_pred_pass *p = ud;
	if (p->visited == p->limit) {
		p->stopped = 1;
		return 1;
	}
	p->visited++;
	if (key->len <= sizeof(p->last)) {
		memcpy(p->last, key->data, key->len);
		p->last_len = key->len;
	}
	int rc = p->fold(key, val, p->ud);
	if (rc < 0)
		p->rc = rc;
	return rc;
}

int sx__pred_pass_chunk(struct sx_pred_pass *p, const uint8_t *hi, size_t hilen, size_t limit)
{
	struct sx_store *st = sx__pred_eng->store;
	uint8_t lo[SX_PRED_PASS_KEY_MAX + 1] = {(uint8_t)p->tag};
	size_t lolen = 1;
	if (p->cursor_len) {
		memcpy(lo, p->cursor, p->cursor_len);
		lo[p->cursor_len] = 0; /* the smallest key after the cursor */
		lolen = p->cursor_len + 1;
	}
	p->limit = limit, p->visited = 0, p->stopped = 0, p->rc = 0, p->last_len = 0;
	int rc = sx_store_scan(st, SX_T_SERIES, lo, lolen, hi, hilen, 0, visit, p);
	if (rc == 0 && p->rc < 0)
		rc = p->rc;
	if (rc == 0)
		rc = pend_write(p, st);
	pend_free(p);
	if (rc < 0)
		return rc;
	if (p->stopped) {
		memcpy(p->cursor, p->last, p->last_len);
		p->cursor_len = p->last_len;
		return 0;
	}
	p->cursor_len = 0;
	return 1;
}
