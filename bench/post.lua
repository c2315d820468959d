-- wrk script: POST the body in $BENCH_BODY_FILE with $BENCH_CONTENT_TYPE to the URL given to wrk,
-- plus the headers in $BENCH_HEADERS ("Name: value" lines), if any.
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
file:close()
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end
