local fake = dofile("tests/lua/scripts/strategy_fake.lua")
local s = dofile("scripts/strategies/popular.lua")

describe("strategies/popular", function()
  it("returns the n most popular unseen items with reasons", function()
    local ctx = fake.new{seen = {"p1"}, sources = {popular = {{"p1", 9}, {"p2", 8}, {"p3", 7}, {"p4", 6}}}}
    local out = s.recommend(ctx, {user = "u", n = 2})
    assert.are.same({"p2", "p3"}, {out[1].item, out[2].item})
    assert.are.same({"popular"}, out[2].reasons)
  end)

  it("asks only the popular source", function()
    local ctx = fake.new{}
    assert.are.same({}, s.recommend(ctx, {user = "u", n = 5}))
    assert.are.same({"popular"}, ctx.calls)
  end)
end)
