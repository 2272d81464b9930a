#include "core/json.h"

#include "core/rpc.h"

void sx_pack_json(msgpack_packer *pk, const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_NULL: msgpack_pack_nil(pk); break;
	case JSON_TRUE: msgpack_pack_true(pk); break;
	case JSON_FALSE: msgpack_pack_false(pk); break;
	case JSON_INTEGER: msgpack_pack_int64(pk, (int64_t)json_integer_value(j)); break;
	case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
	case JSON_STRING: sx_pack_strn(pk, json_string_value(j), json_string_length(j)); break;
	case JSON_ARRAY:
		msgpack_pack_array(pk, json_array_size(j));
		for (size_t i = 0; i < json_array_size(j); i++)
			sx_pack_json(pk, json_array_get(j, i));
		break;
	case JSON_OBJECT: {
		const char *key;
		size_t klen;
		json_t *val;
		msgpack_pack_map(pk, json_object_size(j));
		json_object_keylen_foreach((json_t *)j, key, klen, val) {
			sx_pack_strn(pk, key, klen);
			sx_pack_json(pk, val);
		}
		break;
	}
	}
}
