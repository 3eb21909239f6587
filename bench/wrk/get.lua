-- (a) passthrough: an `other` operation, streamed through untouched.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer bench-token"
