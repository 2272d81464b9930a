-- scripts/dashboards/overview.lua against a fake ctx.analytics.
local DAY = 86400000
local END = 1718409600000

local function fake_ctx(opts)
  opts = opts or {}
  local calls = {}
  local a = {}
  function a.metrics(q)
    calls[#calls + 1] = q
    if q.group_by then
      if opts.no_dims then error("analytics.metrics: invalid_argument: 'item.name' is not a dimension") end
      return { groups = {
        { value = "Rome", total = { count = 5, users = 4, sum = 900 } },
        { value = "Oslo", total = { count = 2, users = 2, sum = 300 } },
      } }
    end
    local n = math.floor((q.to - q.from) / (q.interval == "minute" and 60000 or DAY))
    local series = {}
    for i = 1, n do
      series[i] = { t = q.from + (i - 1) * DAY, count = (q.from >= END - 7 * DAY) and 2 or 1, sum = 10 }
    end
    local count = 0
    for _, p in ipairs(series) do count = count + p.count end
    return { series = series, total = { count = count, sum = 10 * n, avg = 10 } }
  end
  function a.active(q) return { dau = q.at >= END - DAY and 30 or 20, wau = 50, mau = 90, stickiness = 1 / 3 } end
  function a.funnel(q) return { steps = { { name = q.steps[1], users = 10 }, { name = q.steps[4], users = 1 } } } end
  function a.top_items() return { { item = "dest:x", count = 3, attributes = { name = "X" } } } end
  function a.forecast(q)
    local m = {}
    for i = 1, q.horizon do m[i] = 1 end
    return { model = "ANN", level = 0.95, mean = m, lo = m, hi = m }
  end
  return { analytics = a, now = function() return END end }, calls
end

local dash = dofile("scripts/dashboards/overview.lua")
local function panel(id)
  for _, p in ipairs(dash.panels) do if p.id == id then return p end end
end

describe("dashboards/overview", function()
  it("declares its title, refresh and variables", function()
    assert.are.equal("Overview", dash.title)
    assert.are.same({ days = 7, to = false }, dash.variables)
    assert.is_true(#dash.panels >= 6)
  end)

  it("counts bookings over the period and the one before", function()
    local ctx, calls = fake_ctx()
    local r = panel("bookings").query(ctx, { days = 7, to = END })
    assert.are.same({ value = 14, previous = 7 }, r)
    assert.are.equal(END - 7 * DAY, calls[1].from)
    assert.are.equal(END - 14 * DAY, calls[2].from)
    assert.are.equal("book", calls[1].event)
  end)

  it("uses now when `to` is not set", function()
    local ctx, calls = fake_ctx()
    panel("revenue").query(ctx, { days = 1, to = false })
    assert.are.equal(END, calls[1].to)
  end)

  it("reports DAU against the day before", function()
    local r = panel("active_users").query(fake_ctx(), { days = 7, to = END })
    assert.are.equal(30, r.value)
    assert.are.equal(20, r.previous)
  end)

  it("asks the funnel for the four steps", function()
    local r = panel("funnel").query(fake_ctx(), { days = 7, to = END })
    assert.are.equal("search", r.steps[1].name)
    assert.are.equal("book", r.steps[2].name)
  end)

  it("ranks destinations from the item.name dimension, else from the events", function()
    local r = panel("top_destinations").query(fake_ctx(), { days = 7, to = END })
    assert.are.same({ destination = "Rome", bookings = 5, travellers = 4, revenue = 900 }, r.rows[1])
    r = panel("top_destinations").query(fake_ctx({ no_dims = true }), { days = 7, to = END })
    assert.are.same({ destination = "X", bookings = 3 }, r.rows[1])
  end)

  it("forecasts a week ahead from four weeks of days", function()
    local r = panel("bookings_forecast").query(fake_ctx(), { days = 7, to = END })
    assert.are.equal(7, #r.forecast)
    assert.are.equal(28, #r.history)
    assert.are.equal(END, r.forecast[1].t)
  end)

  it("gives 60 points of events per minute", function()
    local r = panel("events_per_minute").query(fake_ctx(), { days = 7, to = END })
    assert.are.equal(60, #r.points)
  end)
end)
