-- content: items whose content vectors are nearest the user's profile
-- (time-decayed mean of what they interacted with); popular as fallback.
return {
  name = "content",
  description = "content-vector similarity to the user's profile, popular as fallback",
  recommend = function(ctx, req)
    local n = req.n or 10
    local pool = math.max(3 * n, 50)
    local cands = ctx.filter(ctx.sources.content(req.user, pool, {include_seen = req.include_seen}), req)
    if #cands < n then
      local more = ctx.filter(ctx.sources.popular{kind = req.kind, n = pool}, req)
      cands = ctx.filter(ctx.blend({content = cands, popular = more}, {content = 1, popular = 0.01}), req)
    end
    return ctx.explain(ctx.mmr(cands, n, 0.9), req)
  end,
}
