-- wrk script: POST webhook bodies with ids unique per run, thread and request.
-- Environment: BENCH_RUN (id prefix), BENCH_PER_BODY (events per body, 1 = a bare object).
-- done() prints one JSON line: requests, seconds, non-2xx answers and socket errors.
local run = os.getenv("BENCH_RUN") or "wrk"
local per_body = tonumber(os.getenv("BENCH_PER_BODY") or "1")
local threads = {}
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local template = '{"id":"%s-%d-%d","event":"email_delivered","timestamp":%d,'
  .. '"subscriber":{"uid":"user-%d","email":"user%d@example.com"},'
  .. '"message":{"id":"msg-%d","subject":"Your weekly digest","campaign_id":"c-1",'
  .. '"campaign_name":"Weekly"}}'

local function event(n)
  local user = n % 50000
  return string.format(template, run, thread_id, n, 1795167060 + n % 86400, user, user, n % 100)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  local body
  if per_body == 1 then
    counter = counter + 1
    body = event(counter)
  else
    local events = {}
    for k = 1, per_body do
      counter = counter + 1
      events[k] = event(counter)
    end
    body = "[" .. table.concat(events, ",") .. "]"
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
