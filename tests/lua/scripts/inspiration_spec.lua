-- scripts/notifications/inspiration.lua: condition and message on fake users.
local rule = dofile("scripts/notifications/inspiration.lua")

local function user(churn, trips_30d)
  return { id = "u1", features = {}, scores = { churn_60d = churn }, summary = { trips_30d = trips_30d } }
end

describe("notifications/inspiration", function()
  it("declares its action, cap and holdout", function()
    assert.are.equal("inspiration", rule.action)
    assert.are.same({ max = 1, days = 7 }, rule.cap)
    assert.is_true(rule.holdout > 0 and rule.holdout < 1)
  end)

  it("targets high churn risk without a recent trip", function()
    assert.is_true(rule.condition(user(0.8, 0)))
    assert.is_false(rule.condition(user(0.8, 1)))
    assert.is_false(rule.condition(user(0.7, 0)))
    assert.is_false(rule.condition(user(nil, 0))) -- no churn model yet
    assert.is_true(rule.condition({ scores = { churn_60d = 0.9 } })) -- no summary: no trips
  end)

  it("names the content items in the message", function()
    local m = rule.message(user(0.9, 0), { { item = "Rome" }, { item = "Oslo" }, { item = "Lima" } })
    assert.are.equal("Time for a new trip?", m.title)
    assert.are.equal("How about Rome, Oslo, Lima?", m.body)
    local empty = rule.message(user(0.9, 0), {})
    assert.is_truthy(empty.body:find("New destinations"))
  end)
end)
