-- wrk script: POST one multipart upload (prepared by bench/wrk.py) and print a JSON summary.
local body_file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")

-- 503s (a full queue answers them by design) counted apart, only on request: a response() callback makes wrk
-- hand every answer to Lua, which costs the client CPU.
local count_503 = os.getenv("BENCH_COUNT_503") == "1"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

if count_503 then
  status_503 = 0
  function response(status)
    if status == 503 then
      status_503 = status_503 + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local extra = ""
  if count_503 then
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + thread:get("status_503")
    end
    extra = string.format(', "status_503": %d', total)
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d%s}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, extra))
end
