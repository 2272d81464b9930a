-- The sextant module under plain luajit (built as build/lua/sextant.so).
local sextant = require("sextant")

describe("sextant module", function()
  it("has a version", function()
    assert.is_string(sextant.version)
    assert.truthy(sextant.version:match("^%d+%.%d+%.%d+$"))
  end)

  describe("msgpack", function()
    local mp = sextant.msgpack

    it("round-trips nested values", function()
      local v = { name = "Lisbon", tags = { "beach", "food" }, price = 799.5, n = 3, ok = true,
                  nested = { deeper = { 1, 2, 3 } } }
      assert.are.same(v, mp.decode(mp.encode(v)))
    end)

    it("packs integers as integers and sequences as arrays", function()
      assert.are.equal("\x93\x01\x02\x03", mp.encode({ 1, 2, 3 }))
      assert.are.equal("\xcd\x01\x00", mp.encode(256))
      assert.are.equal("\xa2hi", mp.encode("hi"))
    end)

    it("refuses what cannot be packed", function()
      local t = {} t.self = t
      local v, err = mp.encode(t)
      assert.is_nil(v)
      assert.truthy(err:match("cyclic"))
      v, err = mp.encode(function() end)
      assert.is_nil(v)
      assert.truthy(err:match("function"))
    end)

    it("refuses bytes that are not one MessagePack object", function()
      local v, err = mp.decode("\xc1")
      assert.is_nil(v)
      assert.is_string(err)
      v = mp.decode("\x01\x02")
      assert.is_nil(v)
    end)
  end)
end)
