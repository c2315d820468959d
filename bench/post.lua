-- wrk script: POST the body in $BENCH_BODY_FILE with $BENCH_CONTENT_TYPE to the URL given to wrk,
-- plus the headers in $BENCH_HEADERS ("Name: value" lines), if any, and, with $BENCH_KEY_HEADER,
-- that header with a new random value on every request (a route key per caller).
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
file:close()
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

-- With $BENCH_PATHS ("weight path" lines), each request goes to one of those paths of the
-- URL's server, drawn by weight (what bench/loadgen.py --path/--zipf does, at wrk's speed).
local paths, total = {}, 0
for weight, path in string.gmatch(os.getenv("BENCH_PATHS") or "", "([^ \n]+) ([^\n]+)") do
  total = total + tonumber(weight)
  paths[#paths + 1] = { total, path }
end
local key_header = os.getenv("BENCH_KEY_HEADER")
if key_header == "" then key_header = nil end
if #paths > 0 or key_header then
  math.randomseed(os.time())
  request = function()
    local path = nil
    if #paths > 0 then
      local r = math.random() * total
      local lo, hi = 1, #paths
      while lo < hi do -- the first path whose cumulative weight reaches r
        local mid = math.floor((lo + hi) / 2)
        if paths[mid][1] < r then lo = mid + 1 else hi = mid end
      end
      path = paths[lo][2]
    end
    if key_header then
      wrk.headers[key_header] = tostring(math.random(1, 2147483647))
    end
    return wrk.format(nil, path)
  end
end
