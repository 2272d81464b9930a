-- scripts/methods/counter.lua against a fake ctx, as a data scientist would test a script.
local function fake_ctx()
  local data = {}
  return {
    store = {
      get = function(k) return data[k] end,
      put = function(k, v) data[k] = v end,
      delete = function(k) data[k] = nil end,
    },
    now = function() return 0 end,
  }, data
end

local counter = dofile("scripts/methods/counter.lua")

describe("methods/counter", function()
  it("starts at zero and counts by one", function()
    local ctx = fake_ctx()
    assert.are.equal(1, counter.incr(ctx, {}))
    assert.are.equal(2, counter.incr(ctx, {}))
    assert.are.equal(2, counter.get(ctx, {}))
  end)

  it("keeps named counters apart and counts by any step", function()
    local ctx, data = fake_ctx()
    assert.are.equal(5, counter.incr(ctx, { key = "a", by = 5 }))
    assert.are.equal(-1, counter.incr(ctx, { key = "b", by = -1 }))
    assert.are.same({ a = 5, b = -1 }, data)
    assert.is_nil(counter.get(ctx, { key = "c" }))
  end)

  it("refuses keys and steps of the wrong type", function()
    local ctx = fake_ctx()
    assert.has_error(function() counter.incr(ctx, { key = 3 }) end)
    assert.has_error(function() counter.incr(ctx, { by = "x" }) end)
  end)

  it("lets readers call get", function()
    assert.are.equal("reader", counter.roles.get)
    assert.is_nil(counter.roles.incr)
  end)
end)
