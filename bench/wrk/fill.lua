-- Cache fill: every request names a new app, so each costs one lookup and one cache entry.
local n = 0
wrk.headers["Authorization"] = "Bearer bench-token"
function request()
  n = n + 1
  return wrk.format("GET", "/v1/projects/bench/messages?app_id=fill-" .. n .. "&contact_id=alice")
end
