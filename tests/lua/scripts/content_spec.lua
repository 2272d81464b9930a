local fake = dofile("tests/lua/scripts/strategy_fake.lua")
local s = dofile("scripts/strategies/content.lua")

describe("strategies/content", function()
  it("ranks by the content source and honours exclusions", function()
    local ctx = fake.new{sources = {content = {{"beach-1", 0.9}, {"beach-2", 0.8}, {"city-1", 0.1}}}}
    local out = s.recommend(ctx, {user = "u", n = 2, context = {exclude = {"beach-1"}}})
    assert.are.same({"beach-2", "city-1"}, {out[1].item, out[2].item})
  end)

  it("falls back to popular for a user without a profile", function()
    local ctx = fake.new{sources = {popular = {{"p1", 5}, {"p2", 4}}}}
    local out = s.recommend(ctx, {user = "new", n = 2})
    assert.are.same({"p1", "p2"}, {out[1].item, out[2].item})
    assert.are.equal("popular", out[1].source)
  end)
end)
