-- wrk script for bench/run.mjs, sign-in case: each request presents a live
-- session's cookie once and the cookie its response sets (the regenerated
-- ID) goes back into the pool, so every request regenerates a live session.
--
--   wrk ... -s bench/wrk-signin.lua URL -- METHOD PATH COOKIE_FILE

local cookies = {}
local method, path = "POST", "/login"

function init(args)
  method, path = args[1], args[2]
  local f = assert(io.open(args[3], "r"))
  for line in f:lines() do
    if #line > 0 then cookies[#cookies + 1] = line end
  end
  f:close()
end

function request()
  -- The pool holds far more cookies than there are connections.
  return wrk.format(method, path, { Cookie = table.remove(cookies, 1) or "" })
end

function response(status, headers, body)
  local set = headers["Set-Cookie"] or headers["set-cookie"]
  if set then cookies[#cookies + 1] = set:match("^([^;]+)") end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
