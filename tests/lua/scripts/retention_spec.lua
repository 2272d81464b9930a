-- scripts/dashboards/retention.lua against a fake ctx.analytics.
local DAY, WEEK = 86400000, 7 * 86400000
local END = 1718409600000

local function fake_ctx()
  local calls = {}
  local a = {}
  function a.retention(q)
    calls[#calls + 1] = q
    local cohorts = {}
    local step = q.cohort_by == "week" and WEEK or DAY
    for i = 1, q.periods do
      cohorts[i] = { start = q.from + (i - 1) * step, size = 10 * i, rates = { 1, 0.1 * i, 0.05 } }
    end
    return { period = q.cohort_by, cohorts = cohorts }
  end
  function a.active(q) return { dau = 10, mau = 40, stickiness = q.at >= END - DAY and 0.25 or 0.2 } end
  return { analytics = a, now = function() return END end }, calls
end

local dash = dofile("scripts/dashboards/retention.lua")
local function panel(id)
  for _, p in ipairs(dash.panels) do if p.id == id then return p end end
end

describe("dashboards/retention", function()
  it("passes the variables to cohort.retention", function()
    local ctx, calls = fake_ctx()
    panel("weekly").query(ctx, { weeks = 4, to = END, returning_event = "book", cohort = "vip" })
    assert.are.same({ cohort_by = "week", periods = 4, from = END - 4 * WEEK, to = END,
                      returning_event = "book", cohort = "vip" }, calls[1])
    panel("weekly").query(ctx, { weeks = 4, to = END, returning_event = false, cohort = false })
    assert.is_nil(calls[2].returning_event)
    assert.is_nil(calls[2].cohort)
  end)

  it("takes week-1 retention from the newest cohorts whose second week is over", function()
    local r = panel("week1").query(fake_ctx(), { weeks = 4, to = END })
    -- cohorts start at END-4w .. END-1w; those starting by END-2w qualify: the 3rd is the newest
    assert.are.equal(0.1 * 3, r.value)
    assert.are.equal(0.1 * 2, r.previous)
  end)

  it("lists new users per cohort", function()
    local r = panel("new_users").query(fake_ctx(), { weeks = 3, to = END })
    assert.are.same({ 10, 20, 30 }, { r.points[1].value, r.points[2].value, r.points[3].value })
  end)

  it("compares stickiness with a week before", function()
    local r = panel("stickiness").query(fake_ctx(), { weeks = 3, to = END })
    assert.are.equal(0.25, r.value)
    assert.are.equal(0.2, r.previous)
  end)
end)
