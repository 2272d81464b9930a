-- hybrid: the default strategy. Blends every candidate source, drops what
-- the request rules out, caps offers, optionally diversifies (MMR) and
-- explains. Every tunable below can be overridden per request through
-- req.options (recommend.items / recommend.evaluate {options = {...}}), and the
-- MMR strength through req.diversity.
local DEFAULTS = {
  -- tuned with recommend.evaluate (bench/README.md, Recommendations)
  weights = {
    collaborative = 1.0, content = 0.1, covisit = 0.2,
    trending = 0.1, offers = 0.2, popular = 0.15,
  },
  pool = 50,       -- candidates asked of each personal source (at least 3 n)
  top_pool = 20,   -- of trending and popular (at least n)
  diversity = 0,   -- MMR: 0 keeps the blended order, 1 is diversity only
  popularity = 0,  -- exponent of the popularity prior on blended scores
  calibrate = true, -- raise the popular weight to what ctx.calibration() finds
  affinity = 0.3,  -- re-score the popular list by the user's tag lift (ctx.affinity strength; 0: off)
  -- popular among the users who share the user's segment (recommend.config
  -- `segment`, default the attribute "country"): its weight as a multiple of
  -- the popular weight (after calibration); users without one keep popular only
  segment = 4,
}

local function cap_offers(list, n)
  local out, offers, cap = {}, 0, math.max(1, math.floor(n / 4))
  for _, c in ipairs(list) do
    if c.source == "offers" then offers = offers + 1 end
    if c.source ~= "offers" or offers <= cap then out[#out + 1] = c end
  end
  return out
end

local function settings(req)
  local o = type(req.options) == "table" and req.options or {}
  local w = {}
  for k, v in pairs(DEFAULTS.weights) do w[k] = v end
  if type(o.weights) == "table" then
    for k, v in pairs(o.weights) do
      if w[k] ~= nil and type(v) == "number" then w[k] = v end
    end
  end
  local function num(x, d) return type(x) == "number" and x or d end
  local diversity = num(req.diversity, num(o.diversity, DEFAULTS.diversity))
  local calibrate = DEFAULTS.calibrate
  if type(o.calibrate) == "boolean" then calibrate = o.calibrate end
  return w, num(o.pool, DEFAULTS.pool), num(o.top_pool, DEFAULTS.top_pool), math.min(1, math.max(0, diversity)),
    math.min(4, math.max(0, num(o.popularity, DEFAULTS.popularity))), calibrate,
    math.min(100, math.max(0, num(o.affinity, DEFAULTS.affinity))),
    math.min(100, math.max(0, num(o.segment, DEFAULTS.segment)))
end

return {
  name = "hybrid",
  description = "collaborative + content + co-visitation + trending + tag-aware popularity, global and in the user's segment (calibrated), filtered, optionally diversified",
  defaults = DEFAULTS,
  recommend = function(ctx, req)
    local n = req.n or 10
    local weights, pool, top_pool, diversity, prior, calibrate, affinity, segment = settings(req)
    pool = math.min(1000, math.max(3 * n, pool))
    top_pool = math.min(1000, math.max(n, top_pool))
    local user = ctx.user(req.user)
    local region = (req.context and req.context.location) or user.region
    local lists
    if user.known then
      lists = {}
      local function add(name, fn, ...)
        if weights[name] > 0 then lists[name] = fn(...) end
      end
      -- seen_in_pool: the pre-tuning behaviour (seen items take pool places,
      -- the filter drops them), for before/after measurements
      local seen = {include_seen = req.include_seen or (type(req.options) == "table" and req.options.seen_in_pool == true)}
      add("collaborative", ctx.sources.collaborative, req.user, pool, seen)
      add("content", ctx.sources.content, req.user, pool, seen)
      add("covisit", ctx.sources.covisit, req.user, pool, seen)
      add("trending", ctx.sources.trending, {kind = req.kind, region = region, n = top_pool})
      -- where popularity ranks users' next new items better than the model
      -- does (few items, weak tastes: the dashboards' demo data), the
      -- calibration says by how much; elsewhere it stays at the default
      if calibrate and weights.collaborative > 0 and weights.popular > 0 then
        local cal = ctx.calibration()
        if cal.popular > weights.popular then
          weights.popular = cal.popular
          top_pool = math.max(top_pool, pool)
        end
      end
      if weights.popular > 0 then
        lists.popular = ctx.sources.popular{kind = req.kind, n = top_pool}
        if affinity > 0 then lists.popular = ctx.affinity(lists.popular, req.user, {strength = affinity}) end
        if segment > 0 then
          lists.segment_popular = ctx.sources.segment_popular{user = req.user, kind = req.kind, n = top_pool, fallback = false}
          if affinity > 0 and #lists.segment_popular > 0 then
            lists.segment_popular = ctx.affinity(lists.segment_popular, req.user, {strength = affinity})
          end
        end
      end
      -- no collaborative candidates (no model yet, or a user it cannot
      -- place): content and co-visitation take over its weight, so a first
      -- event already personalises
      if weights.collaborative > 0 and #(lists.collaborative or {}) == 0 then
        local c, v = #(lists.content or {}) > 0 and weights.content or 0, #(lists.covisit or {}) > 0 and weights.covisit or 0
        if c + v > 0 then
          weights.content = weights.content + weights.collaborative * c / (c + v)
          weights.covisit = weights.covisit + weights.collaborative * v / (c + v)
        end
      end
    else
      lists = {
        popular = ctx.sources.popular{kind = req.kind, n = math.max(3 * n, 50)},
        trending = ctx.sources.trending{kind = req.kind, region = region, n = n},
      }
      if segment > 0 then
        lists.segment_popular = ctx.sources.segment_popular{user = req.user, kind = req.kind, n = math.max(3 * n, 50), fallback = false}
      end
    end
    weights.segment_popular = segment * weights.popular
    if (req.kind == nil or req.kind == "offer") and weights.offers > 0 then
      lists.offers = ctx.sources.offers{region = region, n = 5}
    end
    local cands = ctx.filter(ctx.blend(lists, weights, {popularity = user.known and prior or 0}), req)
    if req.kind == nil then cands = cap_offers(cands, n) end
    if diversity > 0 then
      cands = ctx.mmr(cands, n, 1 - diversity)
    else
      local out = {}
      for i = 1, math.min(n, #cands) do out[i] = cands[i] end
      cands = out
    end
    return ctx.explain(cands, req)
  end,
}
