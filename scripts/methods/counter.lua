-- Counters kept in the script's own store namespace: an example of a methods
-- script, and the read-modify-write that bench/run_rpc.sh measures.
--   counter.incr {key = "visits", by = 1}  -> the new value
--   counter.get  {key = "visits"}          -> the value, or nil
return {
  description = "named counters",

  incr = function(ctx, args)
    local key = args.key or "default"
    local by = args.by or 1
    if type(key) ~= "string" then error("key must be a string") end
    if type(by) ~= "number" then error("by must be a number") end
    local n = (ctx.store.get(key) or 0) + by
    ctx.store.put(key, n)
    return n
  end,

  get = function(ctx, args)
    return ctx.store.get(args.key or "default")
  end,

  roles = { get = "reader" },
}
