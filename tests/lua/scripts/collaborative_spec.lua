local fake = dofile("tests/lua/scripts/strategy_fake.lua")
local s = dofile("scripts/strategies/collaborative.lua")

describe("strategies/collaborative", function()
  it("returns the collaborative candidates in order", function()
    local ctx = fake.new{sources = {collaborative = {{"a", 3}, {"b", 2}, {"c", 1}}, popular = {{"p", 9}}}}
    local out = s.recommend(ctx, {user = "u", n = 2})
    assert.are.same({"a", "b"}, {out[1].item, out[2].item})
    assert.are.same({"collaborative"}, out[1].reasons)
  end)

  it("tops up with popular items after the collaborative ones", function()
    local ctx = fake.new{seen = {"a"}, sources = {collaborative = {{"a", 3}, {"b", 2}}, popular = {{"p", 9}, {"b", 1}}}}
    local out = s.recommend(ctx, {user = "u", n = 3})
    local items = {}
    for i, r in ipairs(out) do items[i] = r.item end
    assert.are.same({"b", "p"}, items)
    assert.are.equal("collaborative", out[1].source)
  end)
end)
