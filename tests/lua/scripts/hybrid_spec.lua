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
