-- collaborative: the user's ALS vector against the item factors; popular
-- items for users the model cannot place.
return {
  name = "collaborative",
  description = "implicit ALS (nearest item factors), popular as fallback",
  recommend = function(ctx, req)
    local n = req.n or 10
    local pool = math.max(3 * n, 50)
    local cands = ctx.filter(ctx.sources.collaborative(req.user, pool, {include_seen = req.include_seen}), req)
    if #cands < n then
      local more = ctx.filter(ctx.sources.popular{kind = req.kind, n = pool}, req)
      cands = ctx.filter(ctx.blend({collaborative = cands, popular = more}, {collaborative = 1, popular = 0.01}), req)
    end
    local out = {}
    for i = 1, math.min(n, #cands) do out[i] = cands[i] end
    return ctx.explain(out, req)
  end,
}
