-- User features for predict.* (the lib "features": require "features" from any script).
-- Each feature is function(u) -> number (nil counts 0, booleans 0/1), where u
-- is the user's summary at the scoring time (see docs/notes-predict.md):
-- days_since_signup/first/last (nil before any event) and, for events,
-- sessions, searches, trips, bookings and spend, NAME_total, NAME_7d,
-- NAME_30d and NAME_90d.
local log = math.log
local function l1p(x) return log(1 + (x or 0)) end

return {
  features = {
    recency_days = function(u) return math.min(u.days_since_last or 365, 365) end,
    tenure_days = function(u) return math.min(u.days_since_signup or 0, 3650) end,
    events_7d = function(u) return l1p(u.events_7d) end,
    events_30d = function(u) return l1p(u.events_30d) end,
    events_90d = function(u) return l1p(u.events_90d) end,
    sessions_30d = function(u) return l1p(u.sessions_30d) end,
    searches_30d = function(u) return l1p(u.searches_30d) end,
    trips_total = function(u) return l1p(u.trips_total) end,
    bookings_90d = function(u) return l1p(u.bookings_90d) end,
    spend_90d = function(u) return l1p(u.spend_90d) end,
  },
  -- label: some `event` ("*": any) in the `days` after the cutoff; absent = true negates it
  targets = {
    trip_14d = { event = "create_trip", days = 14 },
    booking_30d = { event = "book", days = 30 },
    churn_60d = { event = "*", days = 60, absent = true },
  },
  bands = { medium = 0.3, high = 0.6 },
  events = { search = "search", trip = "create_trip", booking = "book",
             spend_event = "book", spend_property = "value", session_gap_minutes = 30 },
}
