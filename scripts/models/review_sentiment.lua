-- Review sentiment: a text classifier trained on "review" events whose
-- properties carry the review `text` and a 1-5 star `rating`.
-- Label definition: 4-5 stars "positive", 1-2 stars "negative"; 3 stars and
-- reviews without text are left out.
-- model.train {recipe = "review_sentiment", args = {from?, to?, days?, event?, limit?}}
local DAY = 86400000

local recipe = {
  type = "text",
  name = "review_sentiment",
  description = "positive/negative reviews from star ratings",
  params = { algorithm = "logreg", word_ngrams = 2, char_ngrams = { 2, 4 }, holdout = 0.2 },
  promote_if = "not_worse",
}

function recipe.label(rating)
  if type(rating) ~= "number" then return nil end
  if rating >= 4 then return "positive" end
  if rating <= 2 then return "negative" end
  return nil
end

function recipe.data(ctx, args)
  local to = args.to or (ctx.now() + 1)
  local from = args.from or math.max(0, to - (args.days or 365) * DAY)
  local rows = {}
  for _, e in ipairs(ctx.events { name = args.event or "review", from = from, to = to, limit = args.limit or 50000 }) do
    local p = e.properties or {}
    local label = recipe.label(p.rating)
    if type(p.text) == "string" and #p.text > 0 and label then
      rows[#rows + 1] = { text = p.text, label = label }
    end
  end
  return { rows = rows }
end

return recipe
