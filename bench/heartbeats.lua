-- wrk script for bench/callback_ingestion.py: heartbeats cycling over jobs and their tokens.
-- args (after --): datafile ("job_id token" per line), nthreads, rate per thread (0 = closed
-- loop), event-id prefix, epoch base. Every request has a unique event_id, and a unique epoch per
-- job (base + round * nthreads + thread id), so each applied heartbeat is one metrics row.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } vtp_timespec;
int clock_gettime(int clk_id, vtp_timespec *tp);
]]
local ts = ffi.new("vtp_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local next_tid = 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  jobs, tokens = {}, {}
  for line in io.lines(args[1]) do
    local j, t = line:match("(%S+) (%S+)")
    jobs[#jobs + 1] = j
    tokens[#tokens + 1] = t
  end
  nthreads = tonumber(args[2])
  local rate = tonumber(args[3])
  prefix = args[4]
  base = tonumber(args[5])
  interval = 0
  if rate > 0 then interval = 1000.0 / rate end
  n, ok, non2xx, dup = 0, 0, 0, 0
  next_ms = nil
end

function request()
  n = n + 1
  local k = ((n - 1) % #jobs) + 1
  local round = math.floor((n - 1) / #jobs)
  local epoch = base + round * nthreads + tid
  local body = '{"event_id":"' .. prefix .. '-' .. tid .. '-' .. n .. '","epoch":' .. epoch ..
      ',"total_epochs":1000000,"metrics":{"loss":0.5}}'
  return wrk.format("POST", "/v1/jobs/" .. jobs[k] .. "/heartbeat",
    { ["Authorization"] = "Bearer " .. tokens[k], ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if body and body:find('"duplicate":true', 1, true) then dup = dup + 1 end
  else
    non2xx = non2xx + 1
  end
end

if true then
  -- open-loop pacing on a fixed schedule (absolute slots: a late reply does not slow the rate
  -- while an idle connection is available); without a rate, a closed loop
  function delay()
    if interval == 0 then return 0 end
    local t = now_ms()
    if next_ms == nil or next_ms < t - 1000 then next_ms = t end
    next_ms = next_ms + interval
    local d = next_ms - t
    if d < 0 then return 0 end
    return d
  end
end

function done(summary, latency, requests)
  local sent_ok, bad, dups = 0, 0, 0
  for _, thread in ipairs(threads) do
    sent_ok = sent_ok + thread:get("ok")
    bad = bad + thread:get("non2xx")
    dups = dups + thread:get("dup")
  end
  local e = summary.errors
  io.write(string.format(
    'VTP_RESULT {"requests":%d,"duration_us":%d,"ok":%d,"non2xx":%d,"duplicates":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, sent_ok, bad, dups, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
