/* lpattern.c — a budgeted Lua pattern matcher (see lpattern.h). */
#include "core/lua/lpattern.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#define PM_MAXCAP 32
#define PM_MAXDEPTH 200
#define PM_CHARGE 4096
#define CAP_OPEN (-1)
#define CAP_POS (-2)

struct pm {
	lua_State *L;
	const char *s0, *se; /* subject */
	const char *pe;	     /* end of pattern */
	int depth;
	int ncap;
	struct {
		const char *at;
		ptrdiff_t len;
	} cap[PM_MAXCAP];
	uint64_t steps; /* not yet charged */
};

static void tick(struct pm *m, uint64_t n)
{
	m->steps += n;
	if (m->steps >= PM_CHARGE) {
		uint64_t s = m->steps;
		m->steps = 0;
		sx__lua_charge(m->L, s);
	}
}

static void flush(struct pm *m)
{
	if (m->steps) {
		uint64_t s = m->steps;
		m->steps = 0;
		sx__lua_charge(m->L, s);
	}
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* ASCII only, as LuaJIT's own classes: the result must not depend on the locale. */
static int in_class(int c, int cl)
{
	int r;
	if (!is_alpha(cl))
		return cl == c;
	switch (cl | 0x20) {
	case 'a': r = is_alpha(c); break;
	case 'c': r = c < 32 || c == 127; break;
	case 'd': r = is_digit(c); break;
	case 'l': r = c >= 'a' && c <= 'z'; break;
	case 'p': r = c > 32 && c < 127 && !is_alpha(c) && !is_digit(c); break;
	case 's': r = c == ' ' || (c >= '\t' && c <= '\r'); break;
	case 'u': r = c >= 'A' && c <= 'Z'; break;
	case 'w': r = is_alpha(c) || is_digit(c); break;
	case 'x': r = is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); break;
	case 'z': r = c == 0; break;
	default: return cl == c;
	}
	return (cl >= 'A' && cl <= 'Z') ? !r : r;
}

/* p at '[', close at its ']' */
static int in_set(int c, const char *p, const char *close)
{
	int yes = 1;
	p++;
	if (*p == '^') {
		yes = 0;
		p++;
	}
	while (p < close) {
		if (*p == '%' && p + 1 < close) {
			if (in_class(c, (unsigned char)p[1]))
				return yes;
			p += 2;
		} else if (p + 2 < close && p[1] == '-') {
			if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
				return yes;
			p += 3;
		} else {
			if ((unsigned char)*p == c)
				return yes;
			p++;
		}
	}
	return !yes;
}

/* The end of the single-character item starting at p (< pe). */
static const char *item_end(struct pm *m, const char *p)
{
	char c = *p++;
	if (c == '%') {
		if (p >= m->pe)
			luaL_error(m->L, "malformed pattern (ends with '%%')");
		return p + 1;
	}
	if (c == '[') {
		if (p < m->pe && *p == '^')
			p++;
		do {
			if (p >= m->pe)
				luaL_error(m->L, "malformed pattern (missing ']')");
			c = *p++;
			if (c == '%') {
				if (p >= m->pe)
					luaL_error(m->L, "malformed pattern (missing ']')");
				p++;
			}
		} while (p >= m->pe || *p != ']');
		return p + 1;
	}
	return p;
}

static int item_match(int c, const char *p, const char *ep)
{
	switch (*p) {
	case '.': return 1;
	case '%': return in_class(c, (unsigned char)p[1]);
	case '[': return in_set(c, p, ep - 1);
	default: return (unsigned char)*p == c;
	}
}

static const char *match(struct pm *m, const char *s, const char *p);

static const char *match_greedy(struct pm *m, const char *s, const char *p, const char *ep)
{
	ptrdiff_t n = 0;
	while (s + n < m->se && item_match((unsigned char)s[n], p, ep)) {
		n++;
		tick(m, 1);
	}
	for (; n >= 0; n--) {
		const char *r = match(m, s + n, ep + 1);
		if (r)
			return r;
	}
	return NULL;
}

static const char *match_lazy(struct pm *m, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *r = match(m, s, ep + 1);
		if (r)
			return r;
		if (s < m->se && item_match((unsigned char)*s, p, ep))
			s++;
		else
			return NULL;
	}
}

static const char *open_capture(struct pm *m, const char *s, const char *p, ptrdiff_t what)
{
	if (m->ncap >= PM_MAXCAP)
		luaL_error(m->L, "too many captures");
	m->cap[m->ncap].at = s;
	m->cap[m->ncap].len = what;
	m->ncap++;
	const char *r = match(m, s, p);
	if (!r)
		m->ncap--;
	return r;
}

static const char *close_capture(struct pm *m, const char *s, const char *p)
{
	int i = m->ncap - 1;
	while (i >= 0 && m->cap[i].len != CAP_OPEN)
		i--;
	if (i < 0)
		luaL_error(m->L, "invalid pattern capture");
	m->cap[i].len = s - m->cap[i].at;
	const char *r = match(m, s, p);
	if (!r)
		m->cap[i].len = CAP_OPEN;
	return r;
}

static const char *match_balance(struct pm *m, const char *s, const char *p)
{
	if (p + 1 >= m->pe)
		luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
	if (s >= m->se || *s != p[0])
		return NULL;
	int open = 1;
	const char *q = s + 1;
	for (; q < m->se; q++) {
		tick(m, 1);
		if (*q == p[1]) {
			if (--open == 0)
				return q + 1;
		} else if (*q == p[0]) {
			open++;
		}
	}
	return NULL;
}

static const char *match_backref(struct pm *m, const char *s, int digit)
{
	int i = digit - '1';
	if (i < 0 || i >= m->ncap || m->cap[i].len == CAP_OPEN)
		luaL_error(m->L, "invalid capture index %%%d", i + 1);
	ptrdiff_t len = m->cap[i].len;
	if (len < 0) /* a position capture matches nothing */
		return NULL;
	tick(m, (uint64_t)len / 16);
	if (m->se - s >= len && memcmp(m->cap[i].at, s, (size_t)len) == 0)
		return s + len;
	return NULL;
}

static const char *match(struct pm *m, const char *s, const char *p)
{
	const char *r = NULL;
	if (++m->depth > PM_MAXDEPTH)
		luaL_error(m->L, "pattern too complex");
	for (;;) {
		tick(m, 1);
		if (p == m->pe) {
			r = s;
			break;
		}
		if (*p == '(') {
			if (p + 1 < m->pe && p[1] == ')')
				r = open_capture(m, s, p + 2, CAP_POS);
			else
				r = open_capture(m, s, p + 1, CAP_OPEN);
			break;
		}
		if (*p == ')') {
			r = close_capture(m, s, p + 1);
			break;
		}
		if (*p == '$' && p + 1 == m->pe) {
			r = s == m->se ? s : NULL;
			break;
		}
		if (*p == '%' && p + 1 < m->pe) {
			if (p[1] == 'b') {
				s = match_balance(m, s, p + 2);
				if (!s)
					break;
				p += 4;
				continue;
			}
			if (p[1] == 'f') {
				p += 2;
				if (p >= m->pe || *p != '[')
					luaL_error(m->L, "missing '[' after '%%f' in pattern");
				const char *ep = item_end(m, p);
				int before = s == m->s0 ? 0 : (unsigned char)s[-1];
				int here = s < m->se ? (unsigned char)*s : 0;
				if (in_set(before, p, ep - 1) || !in_set(here, p, ep - 1))
					break;
				p = ep;
				continue;
			}
			if (is_digit((unsigned char)p[1])) {
				s = match_backref(m, s, (unsigned char)p[1]);
				if (!s)
					break;
				p += 2;
				continue;
			}
		}
		const char *ep = item_end(m, p);
		int ok = s < m->se && item_match((unsigned char)*s, p, ep);
		if (ep < m->pe) {
			if (*ep == '?') {
				if (ok && (r = match(m, s + 1, ep + 1)))
					break;
				p = ep + 1;
				continue;
			}
			if (*ep == '+') {
				r = ok ? match_greedy(m, s + 1, p, ep) : NULL;
				break;
			}
			if (*ep == '*') {
				r = match_greedy(m, s, p, ep);
				break;
			}
			if (*ep == '-') {
				r = match_lazy(m, s, p, ep);
				break;
			}
		}
		if (!ok)
			break;
		s++;
		p = ep;
	}
	m->depth--;
	return r;
}

static void pm_init(struct pm *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
	m->L = L;
	m->s0 = s;
	m->se = s + ls;
	m->pe = p + lp;
	m->depth = 0;
	m->ncap = 0;
	m->steps = 0;
}

static void push_one(struct pm *m, int i, const char *s, const char *e)
{
	if (i >= m->ncap) {
		if (i != 0)
			luaL_error(m->L, "invalid capture index");
		lua_pushlstring(m->L, s, (size_t)(e - s));
		return;
	}
	ptrdiff_t len = m->cap[i].len;
	if (len == CAP_OPEN)
		luaL_error(m->L, "unfinished capture");
	if (len == CAP_POS)
		lua_pushinteger(m->L, (lua_Integer)(m->cap[i].at - m->s0 + 1));
	else
		lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes the captures, or the whole match when there are none and s is set. */
static int push_all(struct pm *m, const char *s, const char *e)
{
	int n = (m->ncap == 0 && s) ? 1 : m->ncap;
	luaL_checkstack(m->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_one(m, i, s, e);
	return n;
}

static int has_specials(const char *p, size_t lp)
{
	for (size_t i = 0; i < lp; i++)
		if (strchr("^$*+?.([%-", p[i]) && p[i] != '\0')
			return 1;
	return 0;
}

static int find_or_match(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	lua_Integer init = luaL_optinteger(L, 3, 1);
	if (init < 0)
		init += (lua_Integer)ls;
	else
		init--;
	if (init < 0)
		init = 0;
	if ((size_t)init > ls)
		init = (lua_Integer)ls;
	if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
		const char *q = memmem(s + init, ls - (size_t)init, p, lp);
		sx__lua_charge(L, (ls - (size_t)init) / 16);
		if (!q) {
			lua_pushnil(L);
			return 1;
		}
		lua_pushinteger(L, (lua_Integer)(q - s) + 1);
		lua_pushinteger(L, (lua_Integer)(q - s) + (lua_Integer)lp);
		return 2;
	}
	struct pm m;
	int anchor = lp > 0 && p[0] == '^';
	if (anchor) {
		p++;
		lp--;
	}
	pm_init(&m, L, s, ls, p, lp);
	const char *at = s + init;
	do {
		m.ncap = 0;
		m.depth = 0;
		const char *e = match(&m, at, p);
		if (e) {
			flush(&m);
			if (!find)
				return push_all(&m, at, e);
			lua_pushinteger(L, (lua_Integer)(at - s) + 1);
			lua_pushinteger(L, (lua_Integer)(e - s));
			return push_all(&m, NULL, NULL) + 2;
		}
		tick(&m, 1);
	} while (at++ < m.se && !anchor);
	flush(&m);
	lua_pushnil(L);
	return 1;
}

int sx__lua_str_find(lua_State *L) { return find_or_match(L, 1); }
int sx__lua_str_match(lua_State *L) { return find_or_match(L, 0); }

static int gmatch_next(lua_State *L)
{
	size_t ls, lp;
	const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
	const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
	lua_Integer pos = lua_tointeger(L, lua_upvalueindex(3));
	struct pm m;
	pm_init(&m, L, s, ls, p, lp);
	for (const char *at = s + pos; at <= m.se; at++) {
		m.ncap = 0;
		m.depth = 0;
		const char *e = match(&m, at, p);
		if (e) {
			lua_Integer next = (lua_Integer)(e - s);
			if (e == at)
				next++; /* an empty match must still advance */
			lua_pushinteger(L, next);
			lua_replace(L, lua_upvalueindex(3));
			flush(&m);
			return push_all(&m, at, e);
		}
		tick(&m, 1);
	}
	flush(&m);
	lua_pushinteger(L, (lua_Integer)ls + 1);
	lua_replace(L, lua_upvalueindex(3));
	return 0;
}

int sx__lua_str_gmatch(lua_State *L)
{
	luaL_checkstring(L, 1);
	luaL_checkstring(L, 2);
	lua_settop(L, 2);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, gmatch_next, 3);
	return 1;
}

static void add_template(struct pm *m, luaL_Buffer *b, const char *s, const char *e)
{
	size_t l;
	const char *t = lua_tolstring(m->L, 3, &l);
	for (size_t i = 0; i < l; i++) {
		if (t[i] != '%') {
			luaL_addchar(b, t[i]);
			continue;
		}
		if (++i == l)
			luaL_error(m->L, "invalid use of '%%' in replacement string");
		if (!is_digit((unsigned char)t[i])) {
			luaL_addchar(b, t[i]);
		} else if (t[i] == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else {
			push_one(m, t[i] - '1', s, e);
			luaL_addvalue(b);
		}
	}
}

static void add_replacement(struct pm *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
	lua_State *L = m->L;
	if (type == LUA_TSTRING || type == LUA_TNUMBER) {
		add_template(m, b, s, e);
		return;
	}
	if (type == LUA_TFUNCTION) {
		lua_pushvalue(L, 3);
		int n = push_all(m, s, e);
		lua_call(L, n, 1);
	} else {
		push_one(m, 0, s, e);
		lua_gettable(L, 3);
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		lua_pushlstring(L, s, (size_t)(e - s));
	} else if (!lua_isstring(L, -1)) {
		luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	}
	luaL_addvalue(b);
}

int sx__lua_str_gsub(lua_State *L)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	int type = lua_type(L, 3);
	lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
	luaL_argcheck(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
				 type == LUA_TTABLE,
		      3, "string/function/table expected");
	if (type == LUA_TFUNCTION || type == LUA_TTABLE)
		sx__lua_cstack_check(L);
	int anchor = lp > 0 && p[0] == '^';
	if (anchor) {
		p++;
		lp--;
	}
	struct pm m;
	luaL_Buffer b;
	pm_init(&m, L, s, ls, p, lp);
	luaL_buffinit(L, &b);
	const char *at = s;
	lua_Integer n = 0;
	while (n < max) {
		m.ncap = 0;
		m.depth = 0;
		const char *e = match(&m, at, p);
		if (e) {
			n++;
			flush(&m);
			add_replacement(&m, &b, at, e, type);
		}
		if (e && e > at)
			at = e;
		else if (at < m.se)
			luaL_addchar(&b, *at++);
		else
			break;
		tick(&m, 1);
		if (anchor)
			break;
	}
	flush(&m);
	luaL_addlstring(&b, at, (size_t)(m.se - at));
	luaL_pushresult(&b);
	lua_pushinteger(L, n);
	return 2;
}
