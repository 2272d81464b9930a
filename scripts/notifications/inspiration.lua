-- Users likely to churn who have not created a trip for a month get an
-- inspiration message with their three top recommended destinations.
return {
  action = "inspiration",
  cap = { max = 1, days = 7 },  -- at most one notification per user per week
  holdout = 0.1,                -- 10% of matching users get nothing, for uplift
  content_items = 3,
  condition = function(user)
    local churn = user.scores.churn_60d
    local s = user.summary or {}
    return churn ~= nil and churn > 0.7 and (s.trips_30d or 0) == 0
  end,
  message = function(user, content)
    local names = {}
    for i, c in ipairs(content) do names[i] = c.item end
    local body = #names > 0 and ("How about " .. table.concat(names, ", ") .. "?")
      or "New destinations are waiting for you."
    return { title = "Time for a new trip?", body = body }
  end,
}
