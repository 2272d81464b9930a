/* The models plugin's pieces: registry key layout, the bundle (MessagePack
 * and JSON round trips, refusal of damaged bundles), NPY headers and files,
 * PSI and the reference bins, id maps, and the logistic C API. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/math/als.h"
#include "core/math/behaviour.h"
#include "core/math/text.h"
#include "core/rpc.h"
#include "core/sx.h"
#include "plugins/models/internal.h"
#include "plugins/models/models.h"
#include "store/store.h"

#define assert_double_equal(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

/* ---- keys ---- */

static void test_registry_keys(void **state)
{
	uint8_t a[SX_MODELS_KEY_MAX], b[SX_MODELS_KEY_MAX];
	(void)state;
	size_t n = sx__models_version_key(a, "churn", 2);
	assert_int_equal(n, 1 + 5 + 1 + 4);
	assert_memory_equal(a, "vchurn\0\0\0\0\2", n);
	/* versions sort as numbers, and one name's versions never interleave
	 * with those of a name it prefixes */
	size_t m = sx__models_version_key(b, "churn", 10);
	assert_true(memcmp(a, b, n < m ? n : m) < 0);
	m = sx__models_version_key(b, "churn2", 1);
	assert_true(memcmp(a, b, n < m ? n : m) < 0);
	uint8_t c[SX_MODELS_KEY_MAX];
	size_t cl = sx__models_version_key(c, "churn", 0xffffffffu);
	assert_true(memcmp(c, b, cl < m ? cl : m) < 0);

	n = sx__models_alias_key(a, "recs", "production");
	assert_int_equal(n, 1 + 4 + 1 + 10);
	assert_memory_equal(a, "arecs\0production", n);
	n = sx__models_head_key(a, "recs");
	assert_memory_equal(a, "nrecs", n);
	assert_int_equal(n, 5);
	assert_int_equal(sx__models_policy_key(a, "recs"), 5);
	assert_int_equal(a[0], 'p');
	assert_int_equal(sx__models_rules_key(a, "recs"), 5);
	assert_int_equal(a[0], 'r');
	n = sx__models_artifact_key(a, "recs", 7);
	assert_int_equal(n, 4 + 1 + 4);
	assert_memory_equal(a, "recs\0\0\0\0\7", n);
	/* the longest name and alias fit an LMDB key */
	char big[SX_MODELS_NAME_MAX + 1];
	memset(big, 'x', SX_MODELS_NAME_MAX);
	big[SX_MODELS_NAME_MAX] = 0;
	assert_true(sx__models_alias_key(a, big, big) <= SX_MODELS_KEY_MAX);
	assert_true(SX_MODELS_KEY_MAX < 511);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(sx__models_name_ok("churn-v2.main_1", 15));
	assert_false(sx__models_name_ok("", 0));
	assert_false(sx__models_name_ok("a b", 3));
	assert_false(sx__models_name_ok("a/b", 3));
	assert_false(sx__models_name_ok("a\0b", 3));
	char big[SX_MODELS_NAME_MAX + 2];
	memset(big, 'a', sizeof(big));
	assert_true(sx__models_name_ok(big, SX_MODELS_NAME_MAX));
	assert_false(sx__models_name_ok(big, SX_MODELS_NAME_MAX + 1));
	assert_int_equal(sx__model_type_parse("als", 3), SX_MODEL_ALS);
	assert_int_equal(sx__model_type_parse("logistic", 8), SX_MODEL_LOGISTIC);
	assert_int_equal(sx__model_type_parse("logit", 5), 0);
}

static void test_idmap(void **state)
{
	struct sx_idmap m;
	char buf[16];
	(void)state;
	sx__idmap_init(&m);
	for (int i = 0; i < 1000; i++) {
		int n = snprintf(buf, sizeof(buf), "id%d", i);
		assert_int_equal(sx__idmap_get(&m, buf, (size_t)n, 1), i);
	}
	assert_int_equal(sx__idmap_get(&m, "id517", 5, 0), 517);
	assert_int_equal(sx__idmap_get(&m, "id517", 5, 1), 517);
	assert_int_equal(sx__idmap_get(&m, "id1000", 6, 0), -1);
	assert_int_equal(m.n, 1000);
	assert_string_equal(m.ids[999], "id999");
	sx__idmap_close(&m);
}

/* ---- NPY ---- */

static void test_npy_header(void **state)
{
	char h[256];
	uint64_t shape[2] = {3, 2};
	(void)state;
	size_t n = sx__npy_header(h, sizeof(h), "<f4", shape, 2);
	/* 10 + 60 + '\n' rounded up to 64, as numpy writes it */
	assert_int_equal(n, 128);
	assert_memory_equal(h, "\x93NUMPY\x01\x00", 8);
	size_t hlen = (uint8_t)h[8] | (size_t)(uint8_t)h[9] << 8;
	assert_int_equal(hlen, n - 10);
	const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
	assert_memory_equal(h + 10, dict, strlen(dict));
	for (size_t i = 10 + strlen(dict); i < n - 1; i++)
		assert_int_equal(h[i], ' ');
	assert_int_equal(h[n - 1], '\n');
	uint64_t one[1] = {5};
	n = sx__npy_header(h, sizeof(h), "<f8", one, 1);
	assert_int_equal(n, 128);
	dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }";
	assert_memory_equal(h + 10, dict, strlen(dict));
	uint64_t huge[2] = {123456789012345ULL, 987654321098ULL};
	n = sx__npy_header(h, sizeof(h), "<f4", huge, 2);
	assert_int_equal(n, 128);
	assert_non_null(memmem(h, n, "(123456789012345, 987654321098)", 31));
	assert_int_equal(sx__npy_header(h, 32, "<f4", shape, 2), 0);
}

static void test_npy_file(void **state)
{
	char path[] = "/tmp/sx-npy-XXXXXX";
	float v[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
	(void)state;
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(sx__npy_write(path, v, 4, 3, 2, 2), 0);
	FILE *f = fopen(path, "rb");
	uint8_t buf[256];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	unlink(path);
	assert_int_equal(n, 128 + 24);
	for (int i = 0; i < 6; i++) {
		const uint8_t *q = buf + 128 + 4 * i;
		uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
		float x;
		memcpy(&x, &u, 4);
		assert_true(x == v[i]);
	}
	assert_int_equal(sx__npy_write("/nonexistent-dir/x.npy", v, 4, 3, 2, 2), SX_EIO);
}

/* ---- drift ---- */

static void test_psi(void **state)
{
	double e[10], a[10] = {0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05};
	(void)state;
	for (int i = 0; i < 10; i++)
		e[i] = 0.1;
	/* 2 * 0.1 ln 2 + 4 * 0.05 ln 2 */
	assert_double_equal(sx__models_psi(e, a, 10), 0.4 * log(2.0), 1e-12);
	assert_double_equal(sx__models_psi(e, e, 10), 0.0, 1e-15);
	/* counts are normalised like shares */
	double counts[10] = {40, 40, 20, 20, 20, 20, 10, 10, 10, 10};
	assert_double_equal(sx__models_psi(e, counts, 10), 0.4 * log(2.0), 1e-12);
	/* an empty bin counts as 1e-4 */
	double e2[2] = {0.5, 0.5}, a2[2] = {1, 0};
	double want = 0.5 * log(2.0) + (1e-4 - 0.5) * log(1e-4 / 0.5);
	assert_double_equal(sx__models_psi(e2, a2, 2), want, 1e-12);
	double zero[2] = {0, 0};
	assert_true(isnan(sx__models_psi(e2, zero, 2)));
}

static void test_reference_bins(void **state)
{
	double s[1000], edges[9], expected[10];
	(void)state;
	for (int i = 0; i < 1000; i++)
		s[i] = (double)((i * 7919) % 1000) / 1000.0; /* 0.000 .. 0.999, shuffled */
	sx__models_ref_fit(s, 1000, edges, expected);
	for (int b = 0; b < 9; b++)
		assert_double_equal(edges[b], (b + 1) * 0.1, 1e-12);
	/* bin b holds edges[b-1] < s <= edges[b]: 0.1 itself is in bin 0 */
	for (int b = 0; b < 10; b++)
		assert_double_equal(expected[b], b == 0 ? 0.101 : b == 9 ? 0.099 : 0.1, 1e-12);
	assert_int_equal(sx__models_bin(edges, 0.1), 0);
	assert_int_equal(sx__models_bin(edges, 0.1000001), 1);
	assert_int_equal(sx__models_bin(edges, -5), 0);
	assert_int_equal(sx__models_bin(edges, 5), 9);
}

/* ---- bundles ---- */

static struct sx_model *als_model(void)
{
	static const float uf[] = {0.5f, -1.25f, 2.0f, 1e-7f};
	static const float itf[] = {1.0f, 0.0f, -0.75f, 3.5f, 0.125f, 0.25f};
	struct sx_model *m = sx__model_new(SX_MODEL_ALS, "recs");
	assert_non_null(m);
	m->version = 4, m->parent = 3, m->trained_at = 1700000000000LL, m->train_ms = 42;
	m->data_from = 1000, m->events_at_train = 77;
	m->n_users = 2, m->n_items = 3, m->k = 2, m->lambda = 0.1f, m->alpha = 2.0f;
	assert_int_equal(sx__idmap_get(&m->users, "alice", 5, 1), 0);
	assert_int_equal(sx__idmap_get(&m->users, "bob", 3, 1), 1);
	assert_int_equal(sx__idmap_get(&m->items, "rome", 4, 1), 0);
	assert_int_equal(sx__idmap_get(&m->items, "oslo", 4, 1), 1);
	assert_int_equal(sx__idmap_get(&m->items, "lima", 4, 1), 2);
	m->als = sx_als_new(2, 3, 2, 0.1f, 2.0f, 1, 1);
	assert_int_equal(sx_als_set_factors(m->als, uf, itf), 0);
	m->weights = calloc(1, sizeof(*m->weights));
	strcpy(m->weights[0].name, "book");
	m->weights[0].w = 5;
	m->nweights = 1;
	m->has_ref = 1;
	for (int b = 0; b < 9; b++)
		m->ref_edges[b] = b * 0.5;
	for (int b = 0; b < 10; b++)
		m->ref_expected[b] = 0.1;
	msgpack_packer pk;
	msgpack_packer_init(&pk, &m->metrics, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str(&pk, 4);
	msgpack_pack_str_body(&pk, "ndcg", 4);
	msgpack_pack_double(&pk, 0.4);
	return m;
}

static void assert_same_als(struct sx_model *a, struct sx_model *b)
{
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->parent, b->parent);
	assert_int_equal(a->trained_at, b->trained_at);
	assert_int_equal(a->data_from, b->data_from);
	assert_int_equal(b->data_to, -1);
	assert_int_equal(a->events_at_train, b->events_at_train);
	assert_int_equal(b->n_users, 2);
	assert_int_equal(b->n_items, 3);
	assert_int_equal(b->k, 2);
	assert_memory_equal(sx_als_user_factors(a->als), sx_als_user_factors(b->als), 4 * sizeof(float));
	assert_memory_equal(sx_als_item_factors(a->als), sx_als_item_factors(b->als), 6 * sizeof(float));
	assert_int_equal(sx__idmap_get(&b->users, "bob", 3, 0), 1);
	assert_int_equal(sx__idmap_get(&b->items, "lima", 4, 0), 2);
	assert_int_equal(b->nweights, 1);
	assert_string_equal(b->weights[0].name, "book");
	assert_true(b->has_ref);
	assert_memory_equal(a->ref_edges, b->ref_edges, sizeof(a->ref_edges));
	assert_int_equal(a->metrics.size, b->metrics.size);
	assert_memory_equal(a->metrics.data, b->metrics.data, a->metrics.size);
}

static void test_bundle_msgpack_round_trip(void **state)
{
	(void)state;
	struct sx_model *m = als_model();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx__models_pack_bundle(&pk, m, 1);
	msgpack_zone_init(&z, 4096);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, NULL, &z, &o), MSGPACK_UNPACK_SUCCESS);
	struct sx_model *b = sx__models_decode_bundle(&o);
	assert_non_null(b);
	assert_same_als(m, b);
	sx_model_unref(b);

	/* a bundle whose factor blob is one float short is refused */
	msgpack_object *w = NULL;
	for (uint32_t i = 0; i < o.via.map.size; i++)
		if (sx_obj_streq(&o.via.map.ptr[i].key, "weights"))
			w = &o.via.map.ptr[i].val;
	assert_non_null(w);
	for (uint32_t i = 0; i < w->via.map.size; i++)
		if (sx_obj_streq(&w->via.map.ptr[i].key, "user_factors"))
			w->via.map.ptr[i].val.via.bin.size -= 4;
	assert_null(sx__models_decode_bundle(&o));
	assert_int_equal(sx_diag_last_code(), SX_EINVAL);
	assert_non_null(strstr(sx_diag_last(), "user_factors"));
	/* and the same damage in the store is data corruption */
	assert_null(sx__models_decode(&o, w, 1));
	assert_int_equal(sx_diag_last_code(), SX_ECORRUPT);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	sx_model_unref(m);
}

static void test_bundle_json_round_trip(void **state)
{
	(void)state;
	struct sx_model *m = als_model();
	char *json = sx__models_bundle_json(m);
	assert_non_null(json);
	assert_non_null(strstr(json, "\"format\":\"sextant.model\""));
	assert_non_null(strstr(json, "\"users\":[\"alice\",\"bob\"]"));
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(sx__models_json_to_msgpack(json, strlen(json), &sb), 0);
	msgpack_zone_init(&z, 4096);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, NULL, &z, &o), MSGPACK_UNPACK_SUCCESS);
	struct sx_model *b = sx__models_decode_bundle(&o);
	assert_non_null(b);
	/* float32 survives the trip through decimal text exactly */
	assert_memory_equal(sx_als_user_factors(m->als), sx_als_user_factors(b->als), 4 * sizeof(float));
	assert_int_equal(b->version, 4);
	sx_model_unref(b);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	free(json);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(sx__models_json_to_msgpack("{\"a\":", 5, &sb), SX_EINVAL);
	msgpack_sbuffer_destroy(&sb);
	sx_model_unref(m);
}

static void test_logistic_api_and_bundle(void **state)
{
	/* separable-ish data with a known direction */
	double X[40 * 2];
	uint8_t y[40];
	(void)state;
	for (int i = 0; i < 40; i++) {
		X[2 * i] = i;
		X[2 * i + 1] = (i * 37) % 11;
		y[i] = (i + (i % 3 == 0 ? 9 : 0)) > 22;
	}
	const char *names[] = {"age", "noise"};
	struct sx_model *m = sx_models_logistic_fit("churn", X, y, 40, 2, names, NULL);
	assert_non_null(m);
	assert_int_equal(sx_model_type(m), SX_MODEL_LOGISTIC);
	assert_int_equal(sx_model_n_features(m), 2);
	assert_string_equal(sx_model_feature_name(m, 0), "age");
	assert_null(sx_model_feature_name(m, 2));
	double c[2], b, p, p2;
	assert_int_equal(sx_model_predict_proba(m, X + 60, c, &b, &p), 0);
	assert_double_equal(1.0 / (1.0 + exp(-(b + c[0] + c[1]))), p, 1e-12);
	assert_true(c[0] > 0); /* age pushes towards 1 */
	double bad[2] = {NAN, 0};
	assert_int_equal(sx_model_predict_proba(m, bad, NULL, NULL, &p2), SX_EINVAL);

	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx__models_pack_bundle(&pk, m, 1);
	msgpack_zone_init(&z, 4096);
	assert_int_equal(msgpack_unpack(sb.data, sb.size, NULL, &z, &o), MSGPACK_UNPACK_SUCCESS);
	struct sx_model *r = sx__models_decode_bundle(&o);
	assert_non_null(r);
	assert_int_equal(sx_model_predict_proba(r, X + 60, NULL, NULL, &p2), 0);
	assert_true(p == p2);
	sx_model_unref(r);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	sx_model_unref(m);
	assert_null(sx_models_logistic_fit("bad name", X, y, 40, 2, NULL, NULL));
	assert_int_equal(sx_diag_last_code(), SX_EINVAL);
}


/* ---- behaviour and text bundles ---- */

static struct sx_model *behaviour_model(void)
{
	struct sx_model *m = sx__model_new(SX_MODEL_BEHAVIOUR, "beh");
	const char *names[] = {"search", "view", "book"}, *items[] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sx__idmap_get(&m->names, names[i], strlen(names[i]), 1), i);
		assert_int_equal(sx__idmap_get(&m->items, items[i], 1, 1), i);
	}
	m->markov = sx_markov_new(3);
	struct sx_markov_opts mo = {0, 0, 0};
	int32_t seq[] = {0, 1, 1, 2};
	int64_t t[] = {0, 1, 2, 3};
	assert_int_equal(sx_markov_add(m->markov, seq, t, 4, &mo), 0);
	struct sx_covisit_opts co = {0, 0, 0, 0, 5, 5};
	m->covisit = sx_covisit_new(3, &co);
	int32_t it[] = {0, 1, 2};
	assert_int_equal(sx_covisit_add(m->covisit, it, t, 3), 0);
	assert_int_equal(sx_covisit_finish(m->covisit), 0);
	m->smoothing = 0.5, m->decay = 0.25, m->item_decay = 0.5, m->order = 2, m->recent_items = 4;
	m->version = 3;
	return m;
}

static struct sx_model *round_trip(const struct sx_model *m, int json)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;
	msgpack_sbuffer_init(&sb);
	if (json) {
		char *text = sx__models_bundle_json(m);
		assert_non_null(text);
		assert_int_equal(sx__models_json_to_msgpack(text, strlen(text), &sb), 0);
		free(text);
	} else {
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		sx__models_pack_bundle(&pk, m, 1);
	}
	msgpack_zone_init(&z, 4096);
	size_t off = 0;
	assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, sb.size);
	struct sx_model *b = sx__models_decode_bundle(&o);
	if (!b)
		fail_msg("decode: %s", sx_diag_last());
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return b;
}

static void test_behaviour_bundle(void **state)
{
	(void)state;
	struct sx_model *m = behaviour_model();
	for (int json = 0; json < 2; json++) {
		struct sx_model *b = round_trip(m, json);
		assert_int_equal(b->type, SX_MODEL_BEHAVIOUR);
		assert_int_equal(b->names.n, 3);
		assert_int_equal(sx__idmap_get(&b->names, "book", 4, 0), 2);
		assert_memory_equal(sx_markov_counts(m->markov), sx_markov_counts(b->markov), 9 * sizeof(double));
		assert_int_equal(b->order, 2);
		assert_true(b->decay == 0.25 && b->item_decay == 0.5 && b->smoothing == 0.5 && b->recent_items == 4);
		double p[3], q[3];
		int32_t recent[] = {0, 1};
		assert_int_equal(sx__behaviour_next(m, recent, 2, p), 0);
		assert_int_equal(sx__behaviour_next(b, recent, 2, q), 0);
		assert_memory_equal(p, q, sizeof(p));
		int32_t out[3], out2[3];
		double s1[3], s2[3];
		int32_t seen[] = {0};
		assert_int_equal(sx__behaviour_items(m, seen, 1, 3, out, s1), 2);
		assert_int_equal(sx__behaviour_items(b, seen, 1, 3, out2, s2), 2);
		assert_memory_equal(out, out2, 2 * sizeof(int32_t));
		assert_memory_equal(s1, s2, 2 * sizeof(double));
		sx_model_unref(b);
	}
	sx_model_unref(m);
}

static struct sx_model *text_model(int algorithm)
{
	static const char *docs[] = {"good great fun", "great value", "bad awful", "awful boring bad", "fun good"};
	static const int32_t y[] = {1, 1, 0, 0, 1};
	struct sx_model *m = sx__model_new(SX_MODEL_TEXT, "txt");
	m->n_classes = 2;
	m->classes = calloc(2, sizeof(char *));
	m->classes[0] = strdup("neg"), m->classes[1] = strdup("pos");
	m->algorithm = algorithm;
	sx_text_feat_opts_default(&m->fo);
	m->fo.bits = 10, m->fo.char_min = 2, m->fo.char_max = 3;
	m->fo.alternate_sign = algorithm != SX_TEXT_NB;
	struct sx_text_sparse X[5];
	for (int i = 0; i < 5; i++)
		assert_int_equal(sx_text_features(&m->fo, docs[i], strlen(docs[i]), &X[i]), 0);
	size_t dim = (size_t)1 << m->fo.bits;
	if (algorithm == SX_TEXT_NB) {
		m->nb = sx_text_nb_new(2, dim);
		assert_int_equal(sx_text_nb_fit(m->nb, X, y, 5, 0.5), 0);
	} else {
		m->tfidf = sx_text_tfidf_new(dim);
		assert_int_equal(sx_text_tfidf_fit(m->tfidf, X, 5), 0);
		for (int i = 0; i < 5; i++)
			assert_int_equal(sx_text_tfidf_transform(m->tfidf, &X[i]), 0);
		m->tlr = sx_text_lr_new(2, dim);
		assert_int_equal(sx_text_lr_fit(m->tlr, X, y, 5, NULL), 0);
	}
	for (int i = 0; i < 5; i++)
		sx_text_sparse_close(&X[i]);
	return m;
}

static void test_text_bundle(void **state)
{
	(void)state;
	for (int alg = SX_TEXT_NB; alg <= SX_TEXT_LOGREG; alg++) {
		struct sx_model *m = text_model(alg);
		for (int json = 0; json < 2; json++) {
			struct sx_model *b = round_trip(m, json);
			assert_int_equal(b->type, SX_MODEL_TEXT);
			assert_string_equal(b->classes[1], "pos");
			assert_int_equal(b->fo.char_max, 3);
			assert_int_equal(!!b->tfidf, alg == SX_TEXT_LOGREG);
			const char *probe[] = {"good fun", "so awful", "unseen words entirely", ""};
			for (int i = 0; i < 4; i++) {
				double p[2], q[2];
				assert_int_equal(sx__text_predict(m, probe[i], strlen(probe[i]), p), 0);
				assert_int_equal(sx__text_predict(b, probe[i], strlen(probe[i]), q), 0);
				assert_memory_equal(p, q, sizeof(p)); /* bit for bit */
			}
			double p[2];
			assert_int_equal(sx__text_predict(b, "good fun", 8, p), 0);
			assert_true(p[1] > 0.5);
			sx_model_unref(b);
		}
		sx_model_unref(m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registry_keys),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_idmap),
		cmocka_unit_test(test_npy_header),
		cmocka_unit_test(test_npy_file),
		cmocka_unit_test(test_psi),
		cmocka_unit_test(test_reference_bins),
		cmocka_unit_test(test_bundle_msgpack_round_trip),
		cmocka_unit_test(test_bundle_json_round_trip),
		cmocka_unit_test(test_logistic_api_and_bundle),
		cmocka_unit_test(test_behaviour_bundle),
		cmocka_unit_test(test_text_bundle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
