-- Retention: weekly and daily cohorts by first visit, how many come back,
-- new users per week and stickiness.
-- Variables: weeks (cohorts and periods of the weekly matrix), to (end, ms;
-- false = now), returning_event (false = any event), cohort (a saved cohort
-- to restrict to; false = everyone).
local DAY, WEEK = 86400000, 7 * 86400000

local function args(ctx, vars, by, n)
  local to = vars.to or ctx.now()
  local step = by == "week" and WEEK or DAY
  local a = { cohort_by = by, periods = n, from = to - n * step, to = to }
  if vars.returning_event then a.returning_event = vars.returning_event end
  if vars.cohort then a.cohort = vars.cohort end
  return a
end

-- week-1 rates of the cohorts whose second week has ended by `to`, newest last
local function week1(cohorts, to)
  local out = {}
  for _, c in ipairs(cohorts) do
    if c.start + 2 * WEEK <= to and c.rates[2] ~= nil then out[#out + 1] = c.rates[2] end
  end
  return out
end

return {
  title = "Retention",
  refresh_ms = 60000,
  variables = { weeks = 8, to = false, returning_event = false, cohort = false },
  panels = {
    {
      id = "weekly", title = "Weekly retention", kind = "retention",
      query = function(ctx, vars)
        local r = ctx.analytics.retention(args(ctx, vars, "week", vars.weeks))
        return { period = r.period, cohorts = r.cohorts }
      end,
    },
    {
      id = "daily", title = "Daily retention, last 14 days", kind = "retention",
      query = function(ctx, vars)
        local r = ctx.analytics.retention(args(ctx, vars, "day", 14))
        return { period = r.period, cohorts = r.cohorts }
      end,
    },
    {
      id = "week1", title = "Week-1 retention", kind = "number",
      query = function(ctx, vars)
        local to = vars.to or ctx.now()
        local r = ctx.analytics.retention(args(ctx, vars, "week", vars.weeks))
        local w = week1(r.cohorts, to)
        return { value = w[#w], previous = w[#w - 1] }
      end,
    },
    {
      id = "new_users", title = "New users per week", kind = "timeseries",
      query = function(ctx, vars)
        local r = ctx.analytics.retention(args(ctx, vars, "week", vars.weeks))
        local points = {}
        for i, c in ipairs(r.cohorts) do points[i] = { t = c.start, value = c.size } end
        return { unit = "week", points = points }
      end,
    },
    {
      id = "stickiness", title = "Stickiness (DAU / MAU)", kind = "number",
      query = function(ctx, vars)
        local to = vars.to or ctx.now()
        local now = ctx.analytics.active { at = to - 1 }
        local before = ctx.analytics.active { at = to - 1 - WEEK }
        return { value = now.stickiness, previous = before.stickiness, dau = now.dau, mau = now.mau }
      end,
    },
  },
}
