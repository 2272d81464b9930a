/* instrument.c — inserts budget checks into Lua source (see instrument.h). */
#include "core/lua/instrument.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sx.h"

enum kind {
	K_EOF,
	K_NAME,
	K_NUM,
	K_STR,
	K_LP,
	K_RP,
	K_RB,
	K_RC,
	K_DCOLON,
	K_DOTS,
	K_SEMI,
	K_OP,
	/* keywords */
	K_AND,
	K_BREAK,
	K_DO,
	K_ELSE,
	K_ELSEIF,
	K_END,
	K_FALSE,
	K_FOR,
	K_FUNCTION,
	K_GOTO,
	K_IF,
	K_IN,
	K_LOCAL,
	K_NIL,
	K_NOT,
	K_OR,
	K_REPEAT,
	K_RETURN,
	K_THEN,
	K_TRUE,
	K_UNTIL,
	K_WHILE,
};

static const struct {
	const char *word;
	enum kind kind;
} keywords[] = {
	{"and", K_AND},	    {"break", K_BREAK},	  {"do", K_DO},		{"else", K_ELSE},
	{"elseif", K_ELSEIF}, {"end", K_END},	  {"false", K_FALSE},	{"for", K_FOR},
	{"function", K_FUNCTION}, {"goto", K_GOTO}, {"if", K_IF},	{"in", K_IN},
	{"local", K_LOCAL},   {"nil", K_NIL},	  {"not", K_NOT},	{"or", K_OR},
	{"repeat", K_REPEAT}, {"return", K_RETURN}, {"then", K_THEN},	{"true", K_TRUE},
	{"until", K_UNTIL},   {"while", K_WHILE},
};

struct tok {
	enum kind kind;
	char ch; /* first byte, for K_OP */
	size_t start, end;
	int line;
};

struct lex {
	const char *s;
	size_t n, pos;
	int line;
	int reserved_line; /* first line using the reserved name, 0 if none */
};

enum block { B_FUNC, B_LOOP, B_DO, B_REPEAT, B_IF };

struct entry {
	enum block kind;
	int awaiting_do;
	long ins; /* index into the insertion list, -1 if none */
	size_t count;
};

struct ins {
	size_t at;
	unsigned weight;
};

struct state {
	struct entry *stack;
	size_t depth, cap;
	struct ins *ins;
	size_t nins, inscap;
	int oom;
};

static int is_ident(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c >= 0x80;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int at(const struct lex *lx, size_t i) { return i < lx->n ? (unsigned char)lx->s[i] : -1; }

/* Consumes one end of line (\n, \r, \r\n or \n\r) at pos. */
static void newline(struct lex *lx)
{
	int c = at(lx, lx->pos);
	lx->pos++;
	int d = at(lx, lx->pos);
	if ((d == '\n' || d == '\r') && d != c)
		lx->pos++;
	lx->line++;
}

/* Level of a long bracket opening at pos ("[", "="*, "["), or -1. */
static int long_level(const struct lex *lx, size_t pos)
{
	size_t i = pos + 1;
	int level = 0;
	while (at(lx, i) == '=') {
		i++;
		level++;
	}
	return at(lx, i) == '[' ? level : -1;
}

static void skip_long(struct lex *lx, int level)
{
	lx->pos += (size_t)level + 2;
	while (lx->pos < lx->n) {
		int c = at(lx, lx->pos);
		if (c == ']') {
			size_t i = lx->pos + 1;
			int l = 0;
			while (at(lx, i) == '=') {
				i++;
				l++;
			}
			if (l == level && at(lx, i) == ']') {
				lx->pos = i + 1;
				return;
			}
			lx->pos++;
		} else if (c == '\n' || c == '\r') {
			newline(lx);
		} else {
			lx->pos++;
		}
	}
}

static void skip_short_string(struct lex *lx)
{
	int quote = at(lx, lx->pos++);
	while (lx->pos < lx->n) {
		int c = at(lx, lx->pos);
		if (c == quote) {
			lx->pos++;
			return;
		}
		if (c == '\n' || c == '\r')
			return; /* unfinished string: the compiler reports it */
		if (c == '\\') {
			lx->pos++;
			int e = at(lx, lx->pos);
			if (e == '\n' || e == '\r') {
				newline(lx);
			} else if (e == 'z') {
				lx->pos++;
				for (;;) {
					int w = at(lx, lx->pos);
					if (w == '\n' || w == '\r')
						newline(lx);
					else if (w == ' ' || w == '\t' || w == '\v' || w == '\f')
						lx->pos++;
					else
						break;
				}
			} else if (e >= 0) {
				lx->pos++;
			}
			continue;
		}
		lx->pos++;
	}
}

static void skip_number(struct lex *lx)
{
	int xp = 'e';
	if (at(lx, lx->pos) == '0' && (at(lx, lx->pos + 1) | 0x20) == 'x')
		xp = 'p';
	int prev = 0;
	for (;;) {
		int c = at(lx, lx->pos);
		if (c < 0)
			break;
		if (is_ident((unsigned char)c) || c == '.' ||
		    ((c == '-' || c == '+') && (prev | 0x20) == xp)) {
			prev = c;
			lx->pos++;
		} else {
			break;
		}
	}
}

static struct tok next_token(struct lex *lx)
{
	struct tok t = {K_EOF, 0, 0, 0, 0};
	for (;;) {
		int c = at(lx, lx->pos);
		if (c < 0) {
			t.start = t.end = lx->n;
			t.line = lx->line;
			return t;
		}
		if (c == '\n' || c == '\r') {
			newline(lx);
		} else if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
			lx->pos++;
		} else if (c == '-' && at(lx, lx->pos + 1) == '-') {
			lx->pos += 2;
			int level = at(lx, lx->pos) == '[' ? long_level(lx, lx->pos) : -1;
			if (level >= 0) {
				skip_long(lx, level);
			} else {
				while (lx->pos < lx->n && at(lx, lx->pos) != '\n' &&
				       at(lx, lx->pos) != '\r')
					lx->pos++;
			}
		} else {
			break;
		}
	}
	t.start = lx->pos;
	t.line = lx->line;
	int c = at(lx, lx->pos);
	t.ch = (char)c;
	if (is_digit((unsigned char)c) || (c == '.' && is_digit((unsigned char)at(lx, lx->pos + 1)))) {
		skip_number(lx);
		t.kind = K_NUM;
	} else if (is_ident((unsigned char)c)) {
		while (lx->pos < lx->n && is_ident((unsigned char)lx->s[lx->pos]))
			lx->pos++;
		size_t len = lx->pos - t.start;
		t.kind = K_NAME;
		for (size_t i = 0; i < SX_ARRAY_SIZE(keywords); i++) {
			if (strlen(keywords[i].word) == len &&
			    memcmp(keywords[i].word, lx->s + t.start, len) == 0) {
				t.kind = keywords[i].kind;
				break;
			}
		}
		if (t.kind == K_NAME && len == sizeof(SX__INSTR_NAME) - 1 &&
		    memcmp(lx->s + t.start, SX__INSTR_NAME, len) == 0 && !lx->reserved_line)
			lx->reserved_line = t.line;
	} else if (c == '"' || c == '\'') {
		skip_short_string(lx);
		t.kind = K_STR;
	} else if (c == '[' && long_level(lx, lx->pos) >= 0) {
		skip_long(lx, long_level(lx, lx->pos));
		t.kind = K_STR;
	} else {
		lx->pos++;
		switch (c) {
		case '(': t.kind = K_LP; break;
		case ')': t.kind = K_RP; break;
		case ']': t.kind = K_RB; break;
		case '}': t.kind = K_RC; break;
		case ';': t.kind = K_SEMI; break;
		case ':':
			t.kind = K_OP;
			if (at(lx, lx->pos) == ':') {
				lx->pos++;
				t.kind = K_DCOLON;
			}
			break;
		case '.':
			t.kind = K_OP;
			if (at(lx, lx->pos) == '.' && at(lx, lx->pos + 1) == '.') {
				lx->pos += 2;
				t.kind = K_DOTS;
			}
			break;
		default: t.kind = K_OP; break;
		}
	}
	t.end = lx->pos;
	return t;
}

static long add_ins(struct state *st, size_t at, unsigned weight)
{
	if (st->nins == st->inscap) {
		size_t cap = st->inscap ? st->inscap * 2 : 64;
		struct ins *p = realloc(st->ins, cap * sizeof(*p));
		if (!p) {
			st->oom = 1;
			return -1;
		}
		st->ins = p;
		st->inscap = cap;
	}
	st->ins[st->nins].at = at;
	st->ins[st->nins].weight = weight;
	return (long)st->nins++;
}

static struct entry *push(struct state *st, enum block kind)
{
	if (st->depth == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 32;
		struct entry *p = realloc(st->stack, cap * sizeof(*p));
		if (!p) {
			st->oom = 1;
			return NULL;
		}
		st->stack = p;
		st->cap = cap;
	}
	struct entry *e = &st->stack[st->depth++];
	e->kind = kind;
	e->awaiting_do = 0;
	e->ins = -1;
	e->count = 0;
	return e;
}

static struct entry *top(struct state *st) { return st->depth ? &st->stack[st->depth - 1] : NULL; }

static void pop(struct state *st)
{
	struct entry *e = &st->stack[--st->depth];
	if (e->ins >= 0) {
		size_t w = e->count;
		if (w < 1)
			w = 1;
		if (w > SX__INSTR_MAXW)
			w = SX__INSTR_MAXW;
		st->ins[e->ins].weight = (unsigned)w;
	}
	struct entry *parent = top(st);
	if (parent && e->kind != B_FUNC)
		parent->count += e->count;
}

/* Can a statement end with a token of this kind (or a block begin)? Decides
 * whether a following `goto name` is a goto statement or the variable goto. */
static int ends_statement(enum kind k)
{
	switch (k) {
	case K_NAME: case K_NUM: case K_STR: case K_RP: case K_RB: case K_RC:
	case K_DCOLON: case K_DOTS: case K_SEMI: case K_END: case K_TRUE: case K_FALSE:
	case K_NIL: case K_BREAK: case K_DO: case K_THEN: case K_ELSE: case K_REPEAT:
		return 1;
	default:
		return 0;
	}
}

static const char PREFIX[] = "local " SX__INSTR_NAME "=...;";

int sx__lua_instrument(const char *chunkname, const char *src, size_t len, char **out,
		       size_t *outlen)
{
	struct lex lx = {src, len, 0, 1, 0};
	struct state st = {0};
	size_t body = 0; /* where the prefix goes */
	int has_body = 1;

	if (len >= 3 && (unsigned char)src[0] == 0xef && (unsigned char)src[1] == 0xbb &&
	    (unsigned char)src[2] == 0xbf)
		body = 3;
	lx.pos = body;
	if (at(&lx, lx.pos) == '#') {
		while (lx.pos < len && src[lx.pos] != '\n' && src[lx.pos] != '\r')
			lx.pos++;
		if (lx.pos < len)
			newline(&lx);
		else
			has_body = 0;
		body = lx.pos;
	}

	enum kind prev = K_SEMI;
	int fstate = 0; /* 1: after `function`, 2: inside its parameter list */
	size_t fidx = 0;
	struct tok cur = next_token(&lx);
	struct tok nxt = next_token(&lx);
	while (cur.kind != K_EOF && !st.oom) {
		struct entry *t = top(&st);
		if (t)
			t->count++;
		if (fstate == 1) {
			if (cur.kind == K_LP)
				fstate = 2;
			else if (!(cur.kind == K_NAME || (cur.kind == K_OP && (cur.ch == '.' || cur.ch == ':'))))
				fstate = 0;
		} else if (fstate == 2) {
			if (cur.kind == K_RP) {
				if (fidx < st.depth && st.stack[fidx].kind == B_FUNC && st.stack[fidx].ins < 0)
					st.stack[fidx].ins = add_ins(&st, cur.end, 1);
				fstate = 0;
			} else if (!(cur.kind == K_NAME || cur.kind == K_DOTS ||
				     (cur.kind == K_OP && cur.ch == ','))) {
				fstate = 0;
			}
		}
		struct entry *e;
		switch (cur.kind) {
		case K_FUNCTION:
			if (push(&st, B_FUNC)) {
				fstate = 1;
				fidx = st.depth - 1;
			}
			break;
		case K_WHILE:
		case K_FOR:
			if ((e = push(&st, B_LOOP)))
				e->awaiting_do = 1;
			break;
		case K_DO:
			e = top(&st);
			if (e && e->kind == B_LOOP && e->awaiting_do) {
				e->awaiting_do = 0;
				e->count = 0; /* a for header runs once; a while condition is cheap */
			} else
				e = push(&st, B_DO);
			if (e)
				e->ins = add_ins(&st, cur.end, 1);
			break;
		case K_REPEAT:
			if ((e = push(&st, B_REPEAT)))
				e->ins = add_ins(&st, cur.end, 1);
			break;
		case K_IF:
			push(&st, B_IF);
			break;
		case K_END:
			e = top(&st);
			if (e && e->kind != B_REPEAT)
				pop(&st);
			break;
		case K_UNTIL:
			e = top(&st);
			if (e && e->kind == B_REPEAT)
				pop(&st);
			break;
		case K_GOTO:
			if (nxt.kind == K_NAME && ends_statement(prev))
				add_ins(&st, cur.start, 1);
			break;
		default:
			break;
		}
		prev = cur.kind;
		cur = nxt;
		nxt = next_token(&lx);
	}
	free(st.stack);
	if (st.oom) {
		free(st.ins);
		return sx_diag_set(SX_ENOMEM, "%s: out of memory instrumenting the source", chunkname);
	}
	if (lx.reserved_line) {
		free(st.ins);
		return sx_diag_set(SX_ESCRIPT, "%s:%d: the name '" SX__INSTR_NAME "' is reserved",
				   chunkname, lx.reserved_line);
	}

	char num[32];
	size_t extra = has_body ? sizeof(PREFIX) - 1 : 0;
	for (size_t i = 0; i < st.nins; i++)
		extra += sizeof(SX__INSTR_NAME) - 1 + 4 +
			 (size_t)snprintf(num, sizeof(num), "%u", st.ins[i].weight);
	char *buf = malloc(len + extra + 1);
	if (!buf) {
		free(st.ins);
		return sx_diag_set(SX_ENOMEM, "%s: out of memory instrumenting the source", chunkname);
	}
	size_t o = 0, from = 0;
	memcpy(buf, src, body);
	o = from = body;
	if (has_body) {
		memcpy(buf + o, PREFIX, sizeof(PREFIX) - 1);
		o += sizeof(PREFIX) - 1;
	}
	for (size_t i = 0; i < st.nins; i++) {
		size_t a = st.ins[i].at;
		memcpy(buf + o, src + from, a - from);
		o += a - from;
		from = a;
		o += (size_t)sprintf(buf + o, " " SX__INSTR_NAME "(%u);", st.ins[i].weight);
	}
	memcpy(buf + o, src + from, len - from);
	o += len - from;
	buf[o] = '\0';
	free(st.ins);
	*out = buf;
	*outlen = o;
	return 0;
}
