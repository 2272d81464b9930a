-- sandbox_spec.lua — sextant.sandbox.run: budgets, escapes and isolation seen from Lua.
local sextant = require("sextant")
local run = sextant.sandbox.run

local limits = {instructions = 2e7, memory = 16 * 2^20, timeout_ms = 2000}

local function stopped(src, opts)
  local t0 = os.clock()
  local ok, msg, code = run(src, opts or limits)
  return ok, msg, code, os.clock() - t0
end

describe("sextant.sandbox.run", function()
  it("returns plain results", function()
    local ok, r = run("return {a = 1, b = {'x', true}, [3] = 2.5}")
    assert.is_true(ok)
    assert.same({a = 1, b = {"x", true}, [3] = 2.5}, r)
    assert.same({true, 42}, {run("return 42")})
    assert.same({true, nil}, {run("local x = 1")})
  end)

  it("refuses results it cannot copy", function()
    local ok, msg = run("return {f = function() end}")
    assert.is_false(ok)
    assert.matches("unsupported value %(function%)", msg)
    ok, msg = run("local t = {} t.t = t return t")
    assert.is_false(ok)
    assert.matches("too deep", msg)
  end)

  it("reports script errors with the line of the source", function()
    local ok, msg, code = run("local x = 1\nfor i = 1, 2 do\n  if i == 2 then error('boom') end\nend",
                              {chunkname = "spec"})
    assert.is_false(ok)
    assert.equal("spec:3: boom", msg)
    assert.equal("script_error", code)
    ok, msg = run("local function f()\n  while true do\nend", {chunkname = "spec"})
    assert.is_false(ok)
    assert.matches("^spec:3:", msg)
  end)

  describe("stops runaway scripts", function()
    local cases = {
      ["a compiled while loop"] = "local function f(n) local i = 0 while not n or i < n do i = i + 1 end end f(1e4) f(1e4) f()",
      ["a numeric for"] = "for i = 1, 1e12 do end",
      ["a goto loop"] = "::a:: goto a",
      ["repeat until false"] = "repeat until false",
      ["tail calls"] = "local function f() return f() end return f()",
      ["pcall around a loop inside a loop"] = "while true do pcall(function() while true do end end) end",
      ["a loop in a coroutine"] = "coroutine.wrap(function() while true do end end)()",
      ["a backtracking pattern"] = "return (('a'):rep(3e4)):find(('a-'):rep(30) .. 'b')",
    }
    for name, src in pairs(cases) do
      it(name, function()
        local ok, msg, code, secs = stopped(src)
        assert.is_false(ok)
        assert.matches("instruction budget exceeded", msg)
        assert.equal("budget_exceeded", code)
        assert.is_true(secs < 1.5)
      end)
    end

    it("by the clock", function()
      local ok, msg, code, secs = stopped("while true do end", {instructions = 0, timeout_ms = 100})
      assert.is_false(ok)
      assert.matches("time limit exceeded %(100 ms%)", msg)
      assert.is_true(secs < 1)
    end)
  end)

  describe("caps memory", function()
    for _, src in ipairs({
      "local t = {} for i = 1, 1e9 do t[i] = i end",
      "return #string.rep('x', 2^30)",
      "local s = 'x' for i = 1, 40 do s = s .. s end",
      "local ok = pcall(function() local t = {} while true do t[#t + 1] = {} end end) return ok",
    }) do
      it(src, function()
        local ok, msg, code = run(src, limits)
        assert.is_false(ok)
        assert.matches("memory budget exceeded", msg)
        assert.equal("budget_exceeded", code)
      end)
    end
    it("string.rep beyond LuaJIT's limit", function()
      local ok, msg = run("return string.rep('x', 2^31)", limits)
      assert.is_false(ok)
      assert.matches("resulting string too large", msg)
    end)
  end)

  it("survives deep recursion and coroutine recursion", function()
    local ok, msg = run("local function f() f() end f()", limits)
    assert.is_false(ok)
    assert.matches("stack overflow", msg)
    ok, msg = run("local function f() coroutine.wrap(f)() end f()", limits)
    assert.is_false(ok)
    assert.matches("coroutine nesting too deep", msg)
    ok, msg = run("local function f() ('x'):gsub('.', f) end f()", limits)
    assert.is_false(ok)
    assert.matches("C stack overflow", msg)
  end)

  it("offers no way out", function()
    local ok, r = run([[
      return {
        os.execute == nil, os.exit == nil, os.getenv == nil, io == nil, package == nil,
        debug == nil, jit == nil, load == nil, loadstring == nil, dofile == nil,
        setfenv == nil, getfenv == nil, string.dump == nil, newproxy == nil,
        not pcall(require, "ffi"), not pcall(require, "jit"), not pcall(require, "io"),
        getmetatable("") == false,
        not pcall(function() getmetatable("").__index = {} end),
        not pcall(collectgarbage, "stop"),
        not pcall(require("sextant").sandbox.run, "return 1"),
      }
    ]], limits)
    assert.is_true(ok)
    for i = 1, 21 do assert.is_true(r[i], "check " .. i) end
    ok = run("\27LJ\2\0\0")
    assert.is_false(ok)
    ok = run(string.dump(function() return 1 end))
    assert.is_false(ok)
  end)

  it("exposes only the allowlisted globals", function()
    local ok, r = run("local n = {} for k in pairs(_G) do n[#n + 1] = k end table.sort(n) return n")
    assert.is_true(ok)
    assert.same({"_G", "_VERSION", "assert", "bit", "collectgarbage", "coroutine", "error",
                 "getmetatable", "ipairs", "math", "next", "os", "pairs", "pcall", "rawequal",
                 "rawget", "rawset", "require", "select", "setmetatable", "string", "table",
                 "tonumber", "tostring", "type", "unpack", "xpcall"}, r)
    ok, r = run("local n = {} for k in pairs(os) do n[#n + 1] = k end table.sort(n) return n")
    assert.same({"clock", "date", "time"}, r)
  end)

  it("matches patterns like LuaJIT does", function()
    local src = [[
      local r = {}
      r[1] = {("hello world"):find("o w")}
      r[2] = {("key = val"):match("(%w+)%s*=%s*(%w+)")}
      r[3] = {("abc"):gsub("%w", "%0%0")}
      r[4] = {("f(a(b)c)"):match("%b()")}
      r[5] = {("THE (quick) fox"):find("%f[%a]%a+", 5)}
      local w = {} for a, b in ("a=1, b=2"):gmatch("(%w+)=(%w+)") do w[#w + 1] = a .. b end
      r[6] = w
      r[7] = {("  x  "):match("^%s*(.-)%s*$")}
      r[8] = {string.find("a.b", ".", 1, true)}
      return r
    ]]
    local ok, r = run(src)
    assert.is_true(ok)
    local expect = loadstring(src)()
    assert.same(expect, r)
  end)
end)
