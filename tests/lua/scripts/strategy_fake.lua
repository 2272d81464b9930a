-- A fake strategy ctx for specs: canned sources, and simple Lua versions of
-- the C helpers (sources ignore their arguments and record their names in
-- calls; filter drops `exclude` and `seen`, blend sums weighted
-- scores, mmr keeps order, explain adds the source as a reason; calibration
-- returns opts.calibration, affinity multiplies scores by 1 + strength *
-- opts.boost[item] and records the strength).
local M = {}

function M.new(opts)
  opts = opts or {}
  local calls = {}
  local function src(name)
    return function(a, b)
      calls[#calls + 1] = name
      local list = (opts.sources or {})[name] or {}
      local out = {}
      for i, c in ipairs(list) do out[i] = {item = c[1], score = c[2], source = name} end
      return out
    end
  end
  local ctx = {
    calls = calls,
    sources = {
      collaborative = src("collaborative"), content = src("content"), covisit = src("covisit"),
      trending = src("trending"), offers = src("offers"), popular = src("popular"),
      segment_popular = src("segment_popular"),
    },
    user = function(id) return {id = id, known = opts.known or false, recent = {}, booked = {}} end,
    filter = function(list, req)
      local drop = {}
      for _, id in ipairs(opts.seen or {}) do drop[id] = true end
      for _, id in ipairs((req.context or {}).exclude or {}) do drop[id] = true end
      local out = {}
      for _, c in ipairs(list) do
        if not drop[c.item] then out[#out + 1] = c; drop[c.item] = true end
      end
      return out
    end,
    blend = function(lists, weights)
      local by, order = {}, {}
      for name, list in pairs(lists) do
        for _, c in ipairs(list) do
          local e = by[c.item]
          if not e then
            e = {item = c.item, score = 0, source = name, best = -1}
            by[c.item] = e
            order[#order + 1] = e
          end
          local s = c.score * ((weights or {})[name] or 1)
          e.score = e.score + s
          if s > e.best then e.best, e.source = s, name end
        end
      end
      table.sort(order, function(a, b) if a.score ~= b.score then return a.score > b.score end return a.item < b.item end)
      for _, e in ipairs(order) do e.best = nil end
      return order
    end,
    mmr = function(list, n)
      local out = {}
      for i = 1, math.min(n, #list) do out[i] = list[i] end
      return out
    end,
    affinities = {},
    calibration = function()
      calls[#calls + 1] = "calibration"
      return opts.calibration or {popular = 0, ndcg = 0, ndcg_collab = 0, ndcg_popular = 0, users = 0}
    end,
    explain = function(list)
      for _, c in ipairs(list) do c.reasons = {c.source} end
      return list
    end,
  }
  ctx.affinity = function(list, user, o)
    local strength = (o or {}).strength or 0.3
    ctx.affinities[#ctx.affinities + 1] = strength
    local out = {}
    for i, c in ipairs(list) do
      out[i] = {item = c.item, source = c.source, score = c.score * (1 + strength * ((opts.boost or {})[c.item] or 0))}
    end
    table.sort(out, function(a, b) if a.score ~= b.score then return a.score > b.score end return a.item < b.item end)
    return out
  end
  return ctx
end

return M
