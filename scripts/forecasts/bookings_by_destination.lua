-- Daily bookings per destination over the last `days` days (default 56),
-- from the live metrics of event "book" grouped by the item's destination
-- (metrics.dimensions {event = "book", dimensions = {"destination"}} must be
-- set; the demo data sets it). Weekly season, two weeks ahead. The last value
-- is yesterday (UTC): the first forecast day is today.
local DAY = 86400000

local recipe = { season = 7, horizon = 14, transform = "none" }

function recipe.series(ctx, args)
  local days = args.days or 56
  local to = math.floor(ctx.now() / DAY) * DAY
  local from = to - days * DAY
  local r = ctx.metrics{ event = args.event or "book", from = from, to = to, interval = "day",
                         group_by = args.dimension or "destination", limit = args.limit or 50 }
  local out = {}
  for _, g in ipairs(r.groups or {}) do
    if g.value ~= nil then
      local values = {}
      for i, point in ipairs(g.series) do values[i] = point.count end
      out[tostring(g.value)] = values
    end
  end
  return out
end

-- Accuracy tracking: forecast.run logs each destination's forecast, and once
-- a forecast day has closed the sweep reads its actual from the same metric
-- (the count of the event on that day, where destination = the series name).
function recipe.actual(ctx, args)
  return { event = args.event or "book", group_by = args.dimension or "destination",
           field = "count", period = "day" }
end

return recipe
