-- Predictions: how the current scores spread over users, and how accurate the
-- served predictions turned out once their label windows closed.
-- Variables: target (a target of lib/features.lua), bins (of the score
-- histogram), window (days of closed label windows), segment ("all",
-- "band:high", "country:FR", ...), at (end of the window, ms; false = now),
-- recipe (a forecast recipe with `actual`), forecast_window (days of closed
-- forecast periods).

local function accuracy(ctx, vars)
  return ctx.predict.accuracy(vars.target, { window = vars.window, segment = vars.segment,
                                             at = vars.at or nil })
end

return {
  title = "Predictions",
  refresh_ms = 60000,
  variables = { target = "churn_60d", bins = 10, window = 30, segment = "all", at = false,
                recipe = "bookings_by_destination", forecast_window = 30 },
  panels = {
    {
      id = "risk_distribution", title = "Score distribution over users", kind = "distribution",
      query = function(ctx, vars)
        local d, err = ctx.predict.distribution(vars.target, vars.bins)
        if not d then return { target = vars.target, bins = {}, scored = 0, note = err } end
        return { target = d.target, version = d.version, scored = d.scored, mean = d.mean,
                 unit = "users", bins = d.bins }
      end,
    },
    {
      id = "auc", title = "Rolling AUC of served predictions", kind = "number",
      query = function(ctx, vars)
        local a, err = accuracy(ctx, vars)
        if not a then return { note = err } end
        return { value = a.auc, samples = a.samples, base_rate = a.base_rate,
                 lift_top_decile = a.lift_top_decile }
      end,
    },
    {
      id = "calibration", title = "Calibration", kind = "table",
      query = function(ctx, vars)
        local a = accuracy(ctx, vars)
        local rows = {}
        for i, b in ipairs(a and a.calibration or {}) do
          rows[i] = { bin = string.format("%.1f-%.1f", b.lo, b.hi), count = b.count,
                      predicted = b.mean_predicted, observed = b.observed }
        end
        return { columns = { "bin", "count", "predicted", "observed" }, rows = rows }
      end,
    },
    {
      id = "segments", title = "AUC by segment", kind = "table",
      query = function(ctx, vars)
        local a = accuracy(ctx, vars)
        local rows = {}
        for i, s in ipairs(a and a.segments or {}) do
          rows[i] = { segment = s.segment, samples = s.samples, positives = s.positives, auc = s.auc }
        end
        table.sort(rows, function(x, y) return x.segment < y.segment end)
        return { columns = { "segment", "samples", "positives", "auc" }, rows = rows }
      end,
    },
    {
      id = "alerts", title = "Accuracy alerts", kind = "table",
      query = function(ctx)
        local rows = {}
        for i, al in ipairs(ctx.predict.alerts()) do
          rows[i] = { target = al.target, state = al.state, rule = al.rule, value = al.value,
                      threshold = al.threshold, since = al.since }
        end
        return { columns = { "target", "state", "rule", "value", "threshold", "since" }, rows = rows }
      end,
    },
    {
      id = "forecast_accuracy", title = "Forecast error as actuals arrived", kind = "table",
      query = function(ctx, vars)
        local columns = { "key", "n", "mape", "smape", "mae", "rmse", "coverage" }
        local a, err = ctx.predict.forecast_accuracy(vars.recipe, { window = vars.forecast_window,
                                                                    at = vars.at or nil })
        if not a then return { columns = columns, rows = {}, note = err } end
        local function row(key, s)
          return { key = key, n = s.n, mape = s.mape, smape = s.smape, mae = s.mae, rmse = s.rmse,
                   coverage = s.coverage }
        end
        local rows = { row("(all)", a) }
        for _, k in ipairs(a.keys) do rows[#rows + 1] = row(k.key, k) end
        return { columns = columns, rows = rows, recipe = a.recipe, window = a.window, alert = a.alert }
      end,
    },
    {
      id = "forecast_alerts", title = "Forecast accuracy alerts", kind = "table",
      query = function(ctx)
        local rows = {}
        for i, al in ipairs(ctx.predict.forecast_alerts()) do
          rows[i] = { recipe = al.recipe, state = al.state, rule = al.rule, value = al.value,
                      threshold = al.threshold, since = al.since }
        end
        return { columns = { "recipe", "state", "rule", "value", "threshold", "since" }, rows = rows }
      end,
    },
  },
}
