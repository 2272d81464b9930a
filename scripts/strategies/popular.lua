-- popular: the most interacted-with items of the last month (time-decayed),
-- the baseline every other strategy is measured against.
return {
  name = "popular",
  description = "time-decayed popularity over a month",
  recommend = function(ctx, req)
    local n = req.n or 10
    local cands = ctx.filter(ctx.sources.popular{kind = req.kind, n = math.max(3 * n, 50)}, req)
    local out = {}
    for i = 1, math.min(n, #cands) do out[i] = cands[i] end
    return ctx.explain(out, req)
  end,
}
