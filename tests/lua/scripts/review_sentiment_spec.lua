-- scripts/models/review_sentiment.lua against a fake ctx.events.
local DAY = 86400000
local NOW = 1718409600000 -- 2024-06-15T00:00Z

local recipe = dofile("scripts/models/review_sentiment.lua")

local function fake_ctx(events)
  local calls = {}
  return {
    now = function() return NOW end,
    events = function(q)
      calls[#calls + 1] = q
      return events
    end,
  }, calls
end

describe("models/review_sentiment", function()
  it("declares a text model with its hyper-parameters", function()
    assert.are.equal("text", recipe.type)
    assert.are.equal("review_sentiment", recipe.name)
    assert.are.equal("logreg", recipe.params.algorithm)
    assert.are.same({ 2, 4 }, recipe.params.char_ngrams)
  end)

  it("labels 4-5 stars positive, 1-2 negative and drops 3 stars", function()
    assert.are.equal("positive", recipe.label(5))
    assert.are.equal("positive", recipe.label(4))
    assert.is_nil(recipe.label(3))
    assert.are.equal("negative", recipe.label(2))
    assert.are.equal("negative", recipe.label(1))
    assert.is_nil(recipe.label("5"))
    assert.is_nil(recipe.label(nil))
  end)

  it("selects review events of the last year by default", function()
    local ctx, calls = fake_ctx({
      { name = "review", properties = { text = "Loved it", rating = 5 } },
      { name = "review", properties = { text = "meh", rating = 3 } },
      { name = "review", properties = { text = "Awful", rating = 1 } },
      { name = "review", properties = { rating = 5 } },
      { name = "review", properties = { text = "", rating = 2 } },
      { name = "review" },
    })
    local data = recipe.data(ctx, {})
    assert.are.same({ rows = { { text = "Loved it", label = "positive" }, { text = "Awful", label = "negative" } } }, data)
    assert.are.equal(1, #calls)
    assert.are.equal("review", calls[1].name)
    assert.are.equal(NOW + 1, calls[1].to)
    assert.are.equal(NOW + 1 - 365 * DAY, calls[1].from)
  end)

  it("takes the window, event name and limit from args", function()
    local ctx, calls = fake_ctx({})
    assert.are.same({ rows = {} }, recipe.data(ctx, { from = 10, to = 20, event = "rate", limit = 7 }))
    assert.are.same({ name = "rate", from = 10, to = 20, limit = 7 }, calls[1])
  end)
end)
