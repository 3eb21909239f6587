-- (b) policy route: POST messages:send with a ~1 KB JSON body (identified_by, allowed).
local pad = string.rep("x", 820)
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"app_id":"dispatch-app","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{"text_message":{"text":"' .. pad .. '"}},"message_metadata":"bench"}'
