-- POST a fixed mix of requests in turn; count the answers by status class; at the end print
-- the figures as one JSON line (as post.lua does).
-- wrk -s bench/mix.lua URL -- FILE CONTENT_TYPE PATH WEIGHT HEADER [FILE ... HEADER ...]
-- WEIGHT: how many of every cycle of requests are this one; HEADER: "Name: value" or "-".
local threads = {}
local cycle = {}
local position = 0
answers_2xx, answers_4xx, answers_5xx, answers_other = 0, 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local kinds = {}
  for i = 1, #args, 5 do
    local file = assert(io.open(args[i], "rb"))
    local body = file:read("*a")
    file:close()
    local headers = { ["Content-Type"] = args[i + 1] }
    local name, value = args[i + 4]:match("^([^:]+):%s*(.*)$")
    if name then
      headers[name] = value
    end
    table.insert(kinds, { request = wrk.format("POST", args[i + 2], headers, body),
                          weight = tonumber(args[i + 3]), left = 0 })
  end
  -- Interleave the kinds (weights 8, 1, 1: eight of the first spread among the others).
  local total = 0
  for _, kind in ipairs(kinds) do
    total = total + kind.weight
  end
  for step = 1, total do
    local best = nil
    for _, kind in ipairs(kinds) do
      kind.left = kind.left + kind.weight
      if best == nil or kind.left > best.left then
        best = kind
      end
    end
    best.left = best.left - total
    table.insert(cycle, best.request)
  end
end

function request()
  position = position % #cycle + 1
  return cycle[position]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    answers_2xx = answers_2xx + 1
  elseif status >= 400 and status < 500 then
    answers_4xx = answers_4xx + 1
  elseif status >= 500 then
    answers_5xx = answers_5xx + 1
  else
    answers_other = answers_other + 1
  end
end

function done(summary, latency, requests)
  local a2, a4, a5, other = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    a2 = a2 + thread:get("answers_2xx")
    a4 = a4 + thread:get("answers_4xx")
    a5 = a5 + thread:get("answers_5xx")
    other = other + thread:get("answers_other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"answers": {"2xx": %d, "4xx": %d, "5xx": %d, "other": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p90": %d, ' ..
    '"p95": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, a2, a4, a5, other,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9)))
end
