-- wrk script for bench/run.mjs: each request carries a different session
-- cookie from a pre-populated pool (no single hot key), or none.
--
--   wrk ... -s bench/wrk.lua URL -- METHOD PATH MODE [COOKIE_FILE]
--
-- MODE: `none` (no cookie: a first-time visitor) or `rotate` (cycle
-- through the pool). `done` prints one JSON line the driver parses.
-- Sign-in, which needs the cookie each response sets, is wrk-signin.lua.

local cookies = {}
local method, path, mode = "GET", "/", "none"
local at = 0

function init(args)
  method, path, mode = args[1], args[2], args[3]
  if mode == "rotate" then
    local f = assert(io.open(args[4], "r"))
    for line in f:lines() do
      if #line > 0 then cookies[#cookies + 1] = line end
    end
    f:close()
    at = math.random(#cookies)
  end
end

function request()
  if mode == "none" then
    return wrk.format(method, path)
  end
  at = at % #cookies + 1
  return wrk.format(method, path, { Cookie = cookies[at] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
