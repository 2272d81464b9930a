local fake = dofile("tests/lua/scripts/strategy_fake.lua")
local hybrid = dofile("scripts/strategies/hybrid.lua")

describe("strategies/hybrid", function()
  it("declares itself", function()
    assert.are.equal("hybrid", hybrid.name)
    assert.is_function(hybrid.recommend)
  end)

  it("gives a new user popular and trending items only", function()
    local ctx = fake.new{known = false, sources = {
      popular = {{"p1", 10}, {"p2", 5}}, trending = {{"t1", 3}}, collaborative = {{"c1", 9}},
    }}
    local out = hybrid.recommend(ctx, {user = "new", n = 3})
    local items = {}
    for i, r in ipairs(out) do items[i] = r.item end
    assert.are.same({"p1", "p2", "t1"}, items)
    for _, c in ipairs(ctx.calls) do assert.are_not.equal("collaborative", c) end
  end)

  it("blends personal sources for a known user, filters and explains", function()
    local ctx = fake.new{known = true, seen = {"c2"}, sources = {
      collaborative = {{"c1", 1.0}, {"c2", 0.9}, {"x", 0.5}},
      content = {{"x", 1.5}, {"k1", 0.2}},
      popular = {{"p1", 0.1}},
    }}
    local out = hybrid.recommend(ctx, {user = "u", n = 3, context = {exclude = {"k1"}}})
    local items = {}
    for i, r in ipairs(out) do items[i] = r.item end
    -- x: 0.5*1.0 + 1.5*0.1 = 0.65 below c1 (1.0); c2 seen, k1 excluded
    assert.are.same({"c1", "x", "p1"}, items)
    assert.are.same({"collaborative"}, out[1].reasons)
    -- req.options.weights overrides: x: 0.5*1.0 + 1.5*0.4 = 1.1 beats c1
    out = hybrid.recommend(ctx, {user = "u", n = 3, context = {exclude = {"k1"}},
                                 options = {weights = {content = 0.4}}})
    assert.are.same("x", out[1].item)
    assert.are.same({"content"}, out[1].reasons)
  end)

  it("lets content take collaborative's weight when it has nothing", function()
    local ctx = fake.new{known = true, sources = {
      content = {{"k", 1.0}, {"m", 0.5}}, popular = {{"p", 1.0}},
    }}
    local out = hybrid.recommend(ctx, {user = "u", n = 3})
    local items = {}
    for i, r in ipairs(out) do items[i] = r.item end
    -- content weight 0.1 + 1.0: k 1.1, m 0.55 above p 0.15
    assert.are.same({"k", "m", "p"}, items)
  end)

  it("raises the popular weight to the calibration's, never lowers it", function()
    local function order(cal, options)
      local ctx = fake.new{known = true, calibration = cal, sources = {
        collaborative = {{"c1", 1.0}}, popular = {{"p1", 1.0}, {"p2", 0.4}},
      }}
      local items = {}
      for i, r in ipairs(hybrid.recommend(ctx, {user = "u", n = 3, options = options})) do items[i] = r.item end
      return items, ctx
    end
    -- default popular weight 0.15: p1 0.15, p2 0.06 under c1
    local items, ctx = order(nil)
    assert.are.same({"c1", "p1", "p2"}, items)
    assert.is_truthy(table.concat(ctx.calls, ","):find("calibration"))
    -- calibrated 2: p1 2.0 above c1 1.0 above p2 0.8
    assert.are.same({"p1", "c1", "p2"}, (order({popular = 2, users = 50})))
    assert.are.same({"c1", "p1", "p2"}, (order({popular = 0.05, users = 50})))
    items, ctx = order({popular = 2, users = 50}, {calibrate = false})
    assert.are.same({"c1", "p1", "p2"}, items)
    assert.is_falsy(table.concat(ctx.calls, ","):find("calibration"))
  end)

  it("re-scores popular items by the user's tag affinity", function()
    local function run(options)
      local ctx = fake.new{known = true, boost = {p2 = 1}, calibration = {popular = 1, users = 10}, sources = {
        popular = {{"p1", 1.0}, {"p2", 0.9}},
      }}
      local items = {}
      for i, r in ipairs(hybrid.recommend(ctx, {user = "u", n = 2, options = options})) do items[i] = r.item end
      return items, ctx.affinities
    end
    -- p2: 0.9 * (1 + 0.3) = 1.17 above p1
    local items, strengths = run(nil)
    assert.are.same({"p2", "p1"}, items)
    assert.are.same({0.3}, strengths)
    items, strengths = run({affinity = 0})
    assert.are.same({"p1", "p2"}, items)
    assert.are.same({}, strengths)
  end)

  it("blends popularity among the user's segment, weighted against popular", function()
    local function run(known, options)
      local ctx = fake.new{known = known, calibration = {popular = 1, users = 10}, sources = {
        popular = {{"p1", 1.0}, {"p2", 0.5}}, segment_popular = {{"p2", 1.0}, {"s1", 0.2}},
      }}
      local items = {}
      for i, r in ipairs(hybrid.recommend(ctx, {user = "u", n = 3, options = options})) do items[i] = r.item end
      return items, ctx.calls
    end
    -- segment weight 4 x popular 1: p2 0.5 + 4, s1 0.8, p1 1.0
    local items, calls = run(true)
    assert.are.same({"p2", "p1", "s1"}, items)
    assert.is_truthy(table.concat(calls, ","):find("segment_popular"))
    -- segment 0.5: p2 0.5 + 0.5 = 1.0 ties p1 (item order), s1 0.1
    assert.are.same({"p1", "p2", "s1"}, (run(true, {segment = 0.5})))
    -- off: the segment source is not asked
    items, calls = run(true, {segment = 0})
    assert.are.same({"p1", "p2"}, items)
    assert.is_falsy(table.concat(calls, ","):find("segment_popular"))
    -- a new user gets it too, against the uncalibrated popular weight 0.15
    items, calls = run(false)
    assert.are.same("p2", items[1])
    assert.is_truthy(table.concat(calls, ","):find("segment_popular"))
  end)

  it("runs MMR only when diversity is asked for", function()
    local ctx = fake.new{known = true, sources = {collaborative = {{"a", 1}, {"b", 0.5}}}}
    local lambdas = {}
    ctx.mmr = function(list, n, lambda)
      lambdas[#lambdas + 1] = lambda
      return list
    end
    hybrid.recommend(ctx, {user = "u", n = 2})
    assert.are.same({}, lambdas)
    hybrid.recommend(ctx, {user = "u", n = 2, diversity = 0.3})
    hybrid.recommend(ctx, {user = "u", n = 2, options = {diversity = 0.5}})
    assert.are.same({0.7, 0.5}, lambdas)
  end)

  it("keeps at most a quarter of the list for offers", function()
    local ctx = fake.new{known = false, sources = {
      offers = {{"o1", 100}, {"o2", 90}, {"o3", 80}}, popular = {{"p1", 1}, {"p2", 1}, {"p3", 1}, {"p4", 1}},
    }}
    local out = hybrid.recommend(ctx, {user = "u", n = 4})
    local offers = 0
    for _, r in ipairs(out) do if r.source == "offers" then offers = offers + 1 end end
    assert.are.equal(1, offers)
    assert.are.equal(4, #out)
  end)
end)
