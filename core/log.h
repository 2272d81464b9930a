/* log.h — the server's log: one line per record on stderr, with time and level. */
#ifndef SX_LOG_H
#define SX_LOG_H

enum sx_log_level { SX_LOG_DEBUG, SX_LOG_INFO, SX_LOG_WARN, SX_LOG_ERROR };

void sx_log_set_level(int level);
int sx_log_level_parse(const char *s); /* -1 if unknown */
void sx_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sx_log_debug(...) sx_log(SX_LOG_DEBUG, __VA_ARGS__)
#define sx_log_info(...) sx_log(SX_LOG_INFO, __VA_ARGS__)
#define sx_log_warn(...) sx_log(SX_LOG_WARN, __VA_ARGS__)
#define sx_log_error(...) sx_log(SX_LOG_ERROR, __VA_ARGS__)

#endif
