-- scripts/dashboards/predictions.lua against a fake ctx.predict.
local dash = dofile("scripts/dashboards/predictions.lua")
local function panel(id)
  for _, p in ipairs(dash.panels) do if p.id == id then return p end end
end

local VARS = { target = "churn_60d", bins = 4, window = 30, segment = "all", at = false,
               recipe = "bookings_by_destination", forecast_window = 14 }

local function fake_ctx(opts)
  opts = opts or {}
  local calls = {}
  local p = {}
  function p.distribution(target, bins)
    calls[#calls + 1] = { "distribution", target, bins }
    if opts.untrained then return nil, "target 'churn_60d' has no trained model" end
    local out = {}
    for i = 1, bins do out[i] = { lo = (i - 1) / bins, hi = i / bins, count = i } end
    return { target = target, version = 3, scored = 10, mean = 0.6, bins = out }
  end
  function p.accuracy(target, o)
    calls[#calls + 1] = { "accuracy", target, o }
    return { target = target, samples = 8, auc = 0.75, base_rate = 0.5, lift_top_decile = 2,
             calibration = { { lo = 0, hi = 0.5, count = 4, mean_predicted = 0.2, observed = 0.25 },
                             { lo = 0.5, hi = 1, count = 4, mean_predicted = 0.7, observed = 0.75 } },
             segments = { { segment = "band:low", samples = 3, positives = 1, auc = 0.5 },
                          { segment = "all", samples = 8, positives = 4, auc = 0.75 } } }
  end
  function p.alerts()
    return { { target = "churn_60d", state = "firing", rule = "auc_below", value = 0.55, threshold = 0.6, since = 5 } }
  end
  function p.forecast_accuracy(recipe, o)
    calls[#calls + 1] = { "forecast_accuracy", recipe, o }
    if opts.untracked then return nil, "recipe 'x' declares no 'actual': its forecasts are not tracked" end
    return { recipe = recipe, window = o.window, n = 14, mape = 12.5, smape = 11, mae = 1.5, rmse = 2, coverage = 0.9,
             keys = { { key = "paris", n = 7, mape = 10, smape = 9, mae = 1, rmse = 1.5, coverage = 1 },
                      { key = "rome", n = 7, mape = 15, smape = 13, mae = 2, rmse = 2.4, coverage = 0.8 } } }
  end
  function p.forecast_alerts()
    return { { recipe = "bookings_by_destination", state = "firing", rule = "mape_above", value = 12.5,
               threshold = 10, since = 7 } }
  end
  return { predict = p }, calls
end

describe("dashboards/predictions", function()
  it("declares a distribution panel and its variables", function()
    assert.are.equal("Predictions", dash.title)
    assert.are.equal("distribution", panel("risk_distribution").kind)
    assert.are.same({ target = "churn_60d", bins = 10, window = 30, segment = "all", at = false,
                      recipe = "bookings_by_destination", forecast_window = 30 }, dash.variables)
  end)

  it("passes target and bins to predict.distribution and returns its histogram", function()
    local ctx, calls = fake_ctx()
    local r = panel("risk_distribution").query(ctx, VARS)
    assert.are.same({ "distribution", "churn_60d", 4 }, calls[1])
    assert.are.equal(4, #r.bins)
    assert.are.same({ lo = 0.75, hi = 1, count = 4 }, r.bins[4])
    assert.are.equal(10, r.scored)
    assert.are.equal("users", r.unit)
  end)

  it("shows an empty histogram with the reason when the target has no model", function()
    local r = panel("risk_distribution").query(fake_ctx({ untrained = true }), VARS)
    assert.are.same({}, r.bins)
    assert.are.equal(0, r.scored)
    assert.truthy(r.note:find("no trained model"))
  end)

  it("reads accuracy over the window, with `at` only when set", function()
    local ctx, calls = fake_ctx()
    local r = panel("auc").query(ctx, VARS)
    assert.are.equal(0.75, r.value)
    assert.are.same({ window = 30, segment = "all" }, calls[1][3])
    panel("auc").query(ctx, { target = "x", bins = 4, window = 7, segment = "band:high", at = 123 })
    assert.are.same({ window = 7, segment = "band:high", at = 123 }, calls[2][3])
  end)

  it("tabulates calibration, segments (sorted) and alerts", function()
    local ctx = fake_ctx()
    local c = panel("calibration").query(ctx, VARS)
    assert.are.same({ bin = "0.5-1.0", count = 4, predicted = 0.7, observed = 0.75 }, c.rows[2])
    local s = panel("segments").query(ctx, VARS)
    assert.are.equal("all", s.rows[1].segment)
    assert.are.equal("band:low", s.rows[2].segment)
    local a = panel("alerts").query(ctx, VARS)
    assert.are.equal("firing", a.rows[1].state)
  end)

  it("tabulates forecast error, all series first, over the forecast window", function()
    local ctx, calls = fake_ctx()
    local r = panel("forecast_accuracy").query(ctx, VARS)
    assert.are.same({ "forecast_accuracy", "bookings_by_destination", { window = 14 } }, calls[1])
    assert.are.same({ "(all)", "paris", "rome" }, { r.rows[1].key, r.rows[2].key, r.rows[3].key })
    assert.are.same({ key = "(all)", n = 14, mape = 12.5, smape = 11, mae = 1.5, rmse = 2, coverage = 0.9 }, r.rows[1])
    panel("forecast_accuracy").query(ctx, { recipe = "r", forecast_window = 7, at = 99 })
    assert.are.same({ window = 7, at = 99 }, calls[2][3])
    local u = panel("forecast_accuracy").query(fake_ctx({ untracked = true }), VARS)
    assert.are.same({}, u.rows)
    assert.truthy(u.note:find("actual"))
    local a = panel("forecast_alerts").query(ctx, VARS)
    assert.are.same({ recipe = "bookings_by_destination", state = "firing", rule = "mape_above", value = 12.5,
                      threshold = 10, since = 7 }, a.rows[1])
  end)
end)
