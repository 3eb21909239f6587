-- (c) rejected: list messages by contact_id for a DISPATCH app.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer bench-token"
