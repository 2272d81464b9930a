-- scripts/forecasts/bookings_by_destination.lua against a fake ctx.metrics.
local DAY = 86400000
local NOW = 1718409600000 + 5 * 3600000 -- 2024-06-15T05:00Z

local recipe = dofile("scripts/forecasts/bookings_by_destination.lua")

local function fake_ctx(groups)
  local calls = {}
  return {
    now = function() return NOW end,
    metrics = function(q)
      calls[#calls + 1] = q
      return { groups = groups }
    end,
  }, calls
end

describe("forecasts/bookings_by_destination", function()
  it("declares a weekly season and a two-week horizon", function()
    assert.are.equal(7, recipe.season)
    assert.are.equal(14, recipe.horizon)
    assert.are.equal("function", type(recipe.series))
  end)

  it("asks for daily counts of the last 56 whole days by destination", function()
    local ctx, calls = fake_ctx({})
    recipe.series(ctx, {})
    local q = calls[1]
    assert.are.equal("book", q.event)
    assert.are.equal("day", q.interval)
    assert.are.equal("destination", q.group_by)
    assert.are.equal(1718409600000, q.to) -- midnight: the current, partial day is left out
    assert.are.equal(1718409600000 - 56 * DAY, q.from)
  end)

  it("turns groups into one series of counts per destination", function()
    local ctx = fake_ctx({
      { value = "Rome", series = { { count = 3 }, { count = 0 }, { count = 5 } } },
      { value = 42, series = { { count = 1 }, { count = 2 }, { count = 1 } } },
      { value = nil, series = { { count = 9 } } }, -- no destination: left out
    })
    local out = recipe.series(ctx, { days = 3 })
    assert.are.same({ 3, 0, 5 }, out.Rome)
    assert.are.same({ 1, 2, 1 }, out["42"])
    local n = 0
    for _ in pairs(out) do n = n + 1 end
    assert.are.equal(2, n)
  end)

  it("takes another event and dimension from the arguments", function()
    local ctx, calls = fake_ctx({})
    recipe.series(ctx, { event = "search", dimension = "region", days = 7, limit = 5 })
    assert.are.equal("search", calls[1].event)
    assert.are.equal("region", calls[1].group_by)
    assert.are.equal(5, calls[1].limit)
    assert.are.equal(calls[1].to - 7 * DAY, calls[1].from)
  end)
end)
