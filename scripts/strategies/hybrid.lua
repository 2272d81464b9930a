-- hybrid: the default strategy. Blends every candidate source, drops what
-- the request rules out, caps offers, diversifies (MMR) and explains.
local WEIGHTS = {
  collaborative = 1.0, content = 0.4, covisit = 0.5,
  trending = 0.25, offers = 0.2, popular = 0.15,
}

local function cap_offers(list, n)
  local out, offers, cap = {}, 0, math.max(1, math.floor(n / 4))
  for _, c in ipairs(list) do
    if c.source == "offers" then offers = offers + 1 end
    if c.source ~= "offers" or offers <= cap then out[#out + 1] = c end
  end
  return out
end

return {
  name = "hybrid",
  description = "collaborative + content + co-visitation + trending, filtered, diversified",
  weights = WEIGHTS,
  recommend = function(ctx, req)
    local n = req.n or 10
    local pool = math.max(3 * n, 50)
    local user = ctx.user(req.user)
    local region = (req.context and req.context.location) or user.region
    local lists
    if user.known then
      lists = {
        collaborative = ctx.sources.collaborative(req.user, pool),
        content = ctx.sources.content(req.user, pool),
        covisit = ctx.sources.covisit(req.user, pool),
        trending = ctx.sources.trending{kind = req.kind, region = region, n = n},
        popular = ctx.sources.popular{kind = req.kind, n = n},
      }
    else
      lists = {
        popular = ctx.sources.popular{kind = req.kind, n = pool},
        trending = ctx.sources.trending{kind = req.kind, region = region, n = n},
      }
    end
    if req.kind == nil or req.kind == "offer" then
      lists.offers = ctx.sources.offers{region = region, n = 5}
    end
    local cands = ctx.filter(ctx.blend(lists, WEIGHTS), req)
    if req.kind == nil then cands = cap_offers(cands, n) end
    return ctx.explain(ctx.mmr(cands, n, 0.9), req)
  end,
}
