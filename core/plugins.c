/* The plugins the engine starts, in order. */
#include "core/plugin.h"

extern const struct sx_plugin sx_plugin_system;
extern const struct sx_plugin sx_plugin_events;
extern const struct sx_plugin sx_plugin_privacy;
extern const struct sx_plugin sx_plugin_models;
extern const struct sx_plugin sx_plugin_recommend;
extern const struct sx_plugin sx_plugin_experiments;
extern const struct sx_plugin sx_plugin_dashboards;
extern const struct sx_plugin sx_plugin_predict;

const struct sx_plugin *const sx_plugins[] = {
	&sx_plugin_system,
	&sx_plugin_events,
	&sx_plugin_privacy,
	&sx_plugin_models,
	&sx_plugin_recommend,
	&sx_plugin_experiments,
	&sx_plugin_dashboards,
	&sx_plugin_predict,
	NULL,
};
