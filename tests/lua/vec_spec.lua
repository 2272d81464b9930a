-- sextant.vec: run under busted (describe/it) or standalone through the shim below.
if not describe then
  local fails = 0
  function describe(_, f) f() end
  function it(name, f)
    local ok, err = pcall(f)
    if not ok then fails = fails + 1; print("FAIL " .. name .. ": " .. tostring(err)) else print("ok   " .. name) end
  end
  assert = setmetatable({
    are = { equal = function(a, b) if a ~= b then error(("expected %s, got %s"):format(tostring(a), tostring(b)), 2) end end,
            same = function(a, b) for i = 1, math.max(#a, #b) do if a[i] ~= b[i] then error("tables differ at " .. i, 2) end end end },
    is_true = function(v) if v ~= true then error("expected true", 2) end end,
    is_false = function(v) if v ~= false then error("expected false", 2) end end,
    is_nil = function(v) if v ~= nil then error("expected nil", 2) end end,
    has_error = function(f, msg) local ok, e = pcall(f); if ok then error("expected an error", 2) end
      if msg and not tostring(e):find(msg, 1, true) then error("error '" .. tostring(e) .. "' lacks '" .. msg .. "'", 2) end end,
    near = function(a, b, tol) if math.abs(a - b) > tol then error(("expected %g ~ %g"):format(a, b), 2) end end,
  }, { __call = function(_, v, m) if not v then error(m or "assertion failed", 2) end return v end })
  _G.__fails = function() return fails end
end
local vec = (sextant or require("sextant")).vec

local function rvec(d, seed)
  local v = {}
  for i = 1, d do seed = (seed * 1103515245 + 12345) % 2147483648; v[i] = seed / 2147483648 - 0.5 end
  return v
end

describe("sextant.vec", function()
  it("computes dot, l2, cosine, norm, normalize", function()
    assert.are.equal(32, vec.dot({1, 2, 3}, {4, 5, 6}))
    assert.are.equal(27, vec.l2({1, 2, 3}, {4, 5, 6}))
    assert.near(vec.cosine({1, 0}, {1, 1}), math.sqrt(0.5), 1e-6)
    assert.near(vec.norm({3, 4}), 5, 1e-6)
    local n = vec.normalize({3, 4})
    assert.near(n[1], 0.6, 1e-6); assert.near(n[2], 0.8, 1e-6)
    local z, msg = vec.normalize({0, 0})
    assert.is_nil(z); assert(msg)
    assert.error_matches(function() vec.dot({1, 2}, {1}) end, "dimension")
    assert.error_matches(function() vec.dot({1, "x"}, {1, 2}) end, "not a number")
    assert.error_matches(function() vec.norm({0/0}) end, "finite")
    assert.has_error(function() vec.norm({}) end)
  end)

  it("indexes, searches, updates and deletes", function()
    local idx = vec.index{dim = 8, metric = "l2", M = 8, ef_construction = 50}
    assert.are.equal("l2", idx:metric()); assert.are.equal(8, idx:dim())
    for i = 1, 500 do idx:add(i, rvec(8, i)) end
    assert.are.equal(500, #idx); assert.are.equal(500, idx:count())
    local labels, dists = idx:search(rvec(8, 42), 5)
    assert.are.equal(5, #labels); assert.are.equal("42", labels[1]); assert.near(dists[1], 0, 1e-6)
    for i = 2, 5 do assert(dists[i] >= dists[i - 1]) end
    idx:add(42, rvec(8, 4242))                      -- update
    assert.are.equal(500, #idx)
    labels = idx:search(rvec(8, 4242), 1)
    assert.are.equal("42", labels[1])
    assert.is_true(idx:delete(42)); assert.is_false(idx:delete(42))
    assert.is_false(idx:contains(42)); assert.is_nil(idx:get(42))
    labels = idx:search(rvec(8, 4242), 10)
    for _, l in ipairs(labels) do assert(l ~= "42") end
    idx:add("18446744073709551615", rvec(8, 9999))     -- 64-bit labels as strings
    assert.are.equal("18446744073709551615", idx:search(rvec(8, 9999), 1)[1])
    assert.near(idx:get(7)[3], rvec(8, 7)[3], 1e-6)
  end)

  it("filters by allowed labels and by a predicate", function()
    local idx = vec.index{dim = 4}
    for i = 1, 300 do idx:add(i, rvec(4, i)) end
    local labels = idx:search(rvec(4, 1), 10, {allow = {5, 7, 9}})
    assert.are.equal(3, #labels)
    for _, l in ipairs(labels) do assert(l == "5" or l == "7" or l == "9") end
    assert.are.equal(0, #idx:search(rvec(4, 1), 10, {allow = {}}))
    labels = idx:search(rvec(4, 1), 10, {filter = function(l) return tonumber(l) % 2 == 0 end, ef = 100})
    assert.are.equal(10, #labels)
    for _, l in ipairs(labels) do assert(tonumber(l) % 2 == 0) end
    assert.error_matches(function() idx:search(rvec(4, 1), 3, {filter = function() error("boom") end}) end, "boom")
    assert.error_matches(function() idx:search(rvec(4, 1), 3, {filter = function(l) idx:add(1000, rvec(4, 3)); return true end}) end, "busy")
    assert.is_false(idx:contains(1000))
    assert.are.equal(3, #idx:search(rvec(4, 1), 3))   -- usable afterwards
  end)

  it("saves and loads", function()
    local idx = vec.index{dim = 6, metric = "cosine"}
    for i = 1, 200 do idx:add(i, rvec(6, i)) end
    idx:delete(3)
    local bytes = idx:save()
    local copy = assert(vec.load(bytes))
    assert.are.equal(199, #copy); assert.are.equal("cosine", copy:metric())
    local a, da = idx:search(rvec(6, 77), 10)
    local b, db = copy:search(rvec(6, 77), 10)
    assert.are.same(a, b); assert.are.same(da, db)
    local bad, msg = vec.load(bytes:sub(1, #bytes - 1))
    assert.is_nil(bad); assert(msg:find("corrupt"))
    local flipped = bytes:sub(1, 200) .. string.char((bytes:byte(201) + 1) % 256) .. bytes:sub(202)
    assert.is_nil((vec.load(flipped)))
  end)

  it("checks its arguments", function()
    assert.error_matches(function() vec.index{} end, "dim")
    assert.error_matches(function() vec.index{dim = 4, metric = "hamming"} end, "metric")
    assert.error_matches(function() vec.index{dim = 4, M = 1} end, "M")
    local idx = vec.index{dim = 3}
    assert.error_matches(function() idx:add(1, {1, 2}) end, "dimension")
    assert.error_matches(function() idx:add(-1, {1, 2, 3}) end, "label")
    assert.error_matches(function() idx:add(1.5, {1, 2, 3}) end, "label")
    assert.error_matches(function() idx:add("12a", {1, 2, 3}) end, "label")
    assert.error_matches(function() idx:add("99999999999999999999", {1, 2, 3}) end, "label")
    assert.error_matches(function() idx:add(1, {0, 0, 0}) end, "invalid_argument")
    assert.error_matches(function() idx:add(1, {1, 1/0, 0}) end, "finite")
    assert.are.equal(0, #idx)
    assert.are.equal(0, #idx:search({1, 2, 3}, 5))
    assert.error_matches(function() idx:search({1, 2, 3}, 0) end, "k must")
    assert.error_matches(function() idx:search({1, 2, 3}, 1, {ef = -1}) end, "ef")
  end)
end)
if __fails and __fails() > 0 then error(__fails() .. " failed") end
