-- scripts/lib/features.lua: the features of the predict plugin, on summary tables.
local f = dofile("scripts/lib/features.lua")

describe("lib/features", function()
  it("maps an empty summary to the defaults", function()
    local u = {}
    assert.are.equal(365, f.features.recency_days(u))
    assert.are.equal(0, f.features.tenure_days(u))
    assert.are.equal(0, f.features.events_7d(u))
    assert.are.equal(0, f.features.spend_90d(u))
  end)

  it("caps recency and tenure and log-scales counts", function()
    assert.are.equal(365, f.features.recency_days({ days_since_last = 1000 }))
    assert.are.equal(2.5, f.features.recency_days({ days_since_last = 2.5 }))
    assert.are.equal(3650, f.features.tenure_days({ days_since_signup = 5000 }))
    assert.is_true(math.abs(f.features.events_7d({ events_7d = 3 }) - math.log(4)) < 1e-12)
    assert.is_true(math.abs(f.features.spend_90d({ spend_90d = 250 }) - math.log(251)) < 1e-12)
  end)

  it("declares the three targets and valid bands", function()
    assert.are.same({ event = "*", days = 60, absent = true }, f.targets.churn_60d)
    assert.are.same({ event = "book", days = 30 }, f.targets.booking_30d)
    assert.are.same({ event = "create_trip", days = 14 }, f.targets.trip_14d)
    assert.is_true(0 < f.bands.medium and f.bands.medium <= f.bands.high and f.bands.high < 1)
  end)

  it("returns numbers for every feature", function()
    local u = { days_since_last = 3, days_since_signup = 40, events_7d = 1, events_30d = 4, events_90d = 9,
                sessions_30d = 2, searches_30d = 5, trips_total = 1, bookings_90d = 1, spend_90d = 99 }
    local n = 0
    for name, fn in pairs(f.features) do
      local v = fn(u)
      assert.are.equal("number", type(v), name)
      n = n + 1
    end
    assert.is_true(n >= 10)
  end)
end)
