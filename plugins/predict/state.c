/* What prediction accuracy (accuracy.c) and forecast accuracy (fcaccuracy.c)
 * keep alike in SX_T_SERIES: records keyed by a tag and a target or recipe
 * name, the checks every alert rule shares, and alert states with the
 * change that a rule's check makes to one. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/predict/internal.h"
#include "store/store.h"

int sx__pred_rule_window_check(int64_t min_samples, int64_t window, int64_t baseline)
{
	if (min_samples < 1 || min_samples > 100000000)
		return sx_diag_set(SX_EINVAL, "argument 'min_samples' must be 1 to 1e8");
	if (window < 1 || window > 3650)
		return sx_diag_set(SX_EINVAL, "argument 'window' (days) must be 1 to 3650");
	if (baseline < 1 || baseline > 3650)
		return sx_diag_set(SX_EINVAL, "argument 'baseline' (days) must be 1 to 3650");
	return 0;
}

size_t sx__pred_name_key(uint8_t *k, char tag, const char *name)
{
	size_t n = strnlen(name, SX_PRED_NAME_KEY - 1);
	k[0] = (uint8_t)tag;
	memcpy(k + 1, name, n);
	return 1 + n;
}

int sx__pred_name_put(char tag, const char *name, msgpack_sbuffer *sb)
{
	uint8_t k[SX_PRED_NAME_KEY];
	int rc = sx_store_put(sx__pred_eng->store, SX_T_SERIES, k, sx__pred_name_key(k, tag, name), sb->data, sb->size);
	msgpack_sbuffer_destroy(sb);
	return rc;
}

int sx__pred_name_scan(char tag, const char *name, sx_store_scan_cb cb, void *ud)
{
	uint8_t lo[SX_PRED_NAME_KEY + 1], hi[SX_PRED_NAME_KEY + 1];
	size_t n = sx__pred_name_key(lo, tag, name);
	memcpy(hi, lo, n);
	lo[n] = 0, hi[n] = 1;
	return sx_store_scan(sx__pred_eng->store, SX_T_SERIES, lo, n + 1, hi, n + 1, 0, cb, ud);
}

int sx__pred_state_get(char tag, const char *name, struct sx_pred_alert_state *a)
{
	uint8_t k[SX_PRED_NAME_KEY];
	struct sx_val v;
	memset(a, 0, sizeof(*a));
	snprintf(a->state, sizeof(a->state), "ok");
	a->value = a->threshold = a->baseline = NAN;
	int rc = sx_store_get(sx__pred_eng->store, SX_T_SERIES, k, sx__pred_name_key(k, tag, name), &v);
	if (rc < 0)
		return rc;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	int64_t samples = 0;
	msgpack_zone_init(&z, 512);
	if (msgpack_unpack(v.data, v.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
	    sx_arg_cstr(&o, "state", 0, a->state, sizeof(a->state)) < 0 || sx_arg_cstr(&o, "rule", 0, a->rule, sizeof(a->rule)) < 0 ||
	    sx_arg_num(&o, "value", 0, &a->value) < 0 || sx_arg_num(&o, "threshold", 0, &a->threshold) < 0 ||
	    sx_arg_num(&o, "baseline", 0, &a->baseline) < 0 || sx_arg_int(&o, "since", 0, &a->since) < 0 ||
	    sx_arg_int(&o, "at", 0, &a->at) < 0 || sx_arg_int(&o, "samples", 0, &samples) < 0)
		rc = sx_diag_set(SX_ECORRUPT, "a stored alert state does not decode");
	a->samples = (uint64_t)samples;
	msgpack_zone_destroy(&z);
	return rc;
}

void sx__pred_kv_num(msgpack_packer *pk, const char *k, double v)
{
	sx_pack_key(pk, k);
	if (isnan(v))
		msgpack_pack_nil(pk);
	else
		msgpack_pack_double(pk, v);
}

void sx__pred_state_pack(msgpack_packer *pk, const char *field, const char *name, const struct sx_pred_alert_state *a)
{
	msgpack_pack_map(pk, 8 + (field != NULL));
	if (field)
		sx_pack_kv_str(pk, field, name);
	sx_pack_kv_str(pk, "state", a->state);
	sx_pack_kv_str(pk, "rule", a->rule[0] ? a->rule : NULL);
	sx__pred_kv_num(pk, "value", a->value);
	sx__pred_kv_num(pk, "threshold", a->threshold);
	sx__pred_kv_num(pk, "baseline", a->baseline);
	sx_pack_kv_uint(pk, "samples", a->samples);
	sx_pack_kv_int(pk, "since", a->since);
	sx_pack_kv_int(pk, "at", a->at);
}

int sx__pred_state_put(char tag, const char *name, const struct sx_pred_alert_state *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	sx__pred_state_pack(&pk, NULL, NULL, a);
	return sx__pred_name_put(tag, name, &sb);
}

int sx__pred_alert_update(const struct sx_pred_alert_kind *kind, const char *name, int which, double value,
			  double threshold, double baseline, uint64_t samples, int64_t now, int *fired)
{
	struct sx_pred_alert_state a;
	int rc = sx__pred_state_get(kind->tag, name, &a);
	if (rc < 0 && rc != SX_ENOENT)
		return 0;
	int was = strcmp(a.state, "firing") == 0;
	if (which == 0 && !was)
		return 0;
	if ((which > 0) != was)
		a.since = now;
	snprintf(a.state, sizeof(a.state), "%s", which > 0 ? "firing" : "ok");
	if (which > 0) {
		snprintf(a.rule, sizeof(a.rule), "%s", kind->rules[which]);
		a.threshold = threshold;
	}
	a.value = value, a.baseline = baseline, a.samples = samples, a.at = now;
	if ((rc = sx__pred_state_put(kind->tag, name, &a)) < 0)
		return rc;
	if ((which > 0) == was)
		return 0;
	if (which > 0)
		++*fired;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 9);
	sx_pack_kv_str(&pk, "type", kind->type);
	sx_pack_kv_str(&pk, "state", which > 0 ? "firing" : "resolved");
	sx_pack_kv_str(&pk, kind->field, name);
	sx_pack_kv_str(&pk, "rule", a.rule);
	sx__pred_kv_num(&pk, "value", value);
	sx__pred_kv_num(&pk, "threshold", a.threshold);
	sx__pred_kv_num(&pk, "baseline", baseline);
	sx_pack_kv_uint(&pk, "samples", samples);
	sx_pack_kv_int(&pk, "at", now);
	if (sx__pred_eng->srv)
		sx_server_publish(sx__pred_eng->srv, "alerts", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return 0;
}
