-- The overview of the travel platform: who is active, what they do now, how
-- searches turn into bookings, bookings and revenue, and where people go.
-- Variables: days (the period of the period panels), to (end of the period,
-- ms; false = now).
local MIN, HOUR, DAY = 60000, 3600000, 86400000

local function period(ctx, vars)
  local to = vars.to or ctx.now()
  to = to - to % MIN
  return to - vars.days * DAY, to
end

-- count and sum of `event` over [from, to)
local function totals(a, event, from, to)
  local r = a.metrics { event = event, from = from, to = to, interval = "day" }
  return r.total
end

local function series(points, field)
  local out = {}
  for i, p in ipairs(points) do
    out[i] = { t = p.t, value = p[field] }
  end
  return out
end

return {
  title = "Overview",
  refresh_ms = 10000,
  variables = { days = 7, to = false },
  panels = {
    {
      id = "active_users", title = "Active users (DAU)", kind = "number",
      query = function(ctx, vars)
        local to = vars.to or ctx.now()
        local now = ctx.analytics.active { at = to - 1 }
        local before = ctx.analytics.active { at = to - 1 - DAY }
        return { value = now.dau, previous = before.dau, wau = now.wau, mau = now.mau,
                 stickiness = now.stickiness }
      end,
    },
    {
      id = "events_per_minute", title = "Events per minute, last hour", kind = "timeseries",
      query = function(ctx, vars)
        local to = vars.to or ctx.now()
        to = to - to % MIN
        local r = ctx.analytics.metrics { event = "*", from = to - HOUR, to = to, interval = "minute" }
        return { unit = "events/min", points = series(r.series, "count") }
      end,
    },
    {
      id = "funnel", title = "Searches to bookings", kind = "funnel",
      query = function(ctx, vars)
        local from, to = period(ctx, vars)
        local r = ctx.analytics.funnel { steps = { "search", "view", "create_trip", "book" },
                                         from = from, to = to, window_ms = DAY }
        return { steps = r.steps }
      end,
    },
    {
      id = "bookings", title = "Bookings", kind = "number",
      query = function(ctx, vars)
        local from, to = period(ctx, vars)
        local len = to - from
        return { value = totals(ctx.analytics, "book", from, to).count,
                 previous = totals(ctx.analytics, "book", from - len, from).count }
      end,
    },
    {
      id = "revenue", title = "Revenue (EUR)", kind = "number",
      query = function(ctx, vars)
        local from, to = period(ctx, vars)
        local len = to - from
        local now, before = totals(ctx.analytics, "book", from, to), totals(ctx.analytics, "book", from - len, from)
        return { value = now.sum, previous = before.sum, average = now.avg }
      end,
    },
    {
      id = "bookings_daily", title = "Bookings and revenue per day", kind = "timeseries",
      query = function(ctx, vars)
        local from, to = period(ctx, vars)
        local r = ctx.analytics.metrics { event = "book", from = from, to = to, interval = "day" }
        return { unit = "day", points = series(r.series, "count"), revenue = series(r.series, "sum") }
      end,
    },
    {
      id = "bookings_forecast", title = "Bookings, next 7 days", kind = "forecast",
      query = function(ctx, vars)
        local _, to = period(ctx, vars)
        to = to - to % DAY
        local r = ctx.analytics.metrics { event = "book", from = to - 28 * DAY, to = to, interval = "day" }
        local values = {}
        for i, p in ipairs(r.series) do values[i] = p.count end
        local ok, f = pcall(ctx.analytics.forecast, { values = values, horizon = 7, season = 7 })
        if not ok then return { history = series(r.series, "count"), error = tostring(f) } end
        local points = {}
        for i = 1, 7 do
          points[i] = { t = to + (i - 1) * DAY, mean = f.mean[i], lo = f.lo[i], hi = f.hi[i] }
        end
        return { model = f.model, level = f.level, history = series(r.series, "count"), forecast = points }
      end,
    },
    {
      id = "top_destinations", title = "Top destinations by bookings", kind = "table",
      query = function(ctx, vars)
        local from, to = period(ctx, vars)
        local ok, r = pcall(ctx.analytics.metrics, { event = "book", from = from, to = to, interval = "day",
                                                     group_by = "item.name", limit = 10 })
        local rows = {}
        if ok then
          for i, g in ipairs(r.groups) do
            rows[i] = { destination = g.value, bookings = g.total.count, travellers = g.total.users,
                        revenue = g.total.sum }
          end
        else
          -- no item.name dimension on "book": count the events themselves
          for i, it in ipairs(ctx.analytics.top_items { event = "book", from = from, to = to, limit = 10 }) do
            rows[i] = { destination = it.attributes.name or it.item, bookings = it.count }
          end
        end
        return { columns = { "destination", "bookings", "travellers", "revenue" }, rows = rows }
      end,
    },
  },
}
