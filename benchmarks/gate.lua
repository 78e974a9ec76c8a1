-- wrk script of the benchmarks (see benchmarks/README.rst): POSTs one body
-- again and again, each request with a fresh X-GitHub-Delivery, counts the
-- answers by status and by AMQP status in the actions report (and the 503
-- answers carrying Retry-After), and prints one JSON line ("BENCH-JSON
-- {...}") that benchmarks/run.py reads.
--
-- Configured by environment variables (read by the setup/done state and by
-- every thread, which do not share globals):
--   BENCH_REQUEST   a file: the request head up to (excluded) the delivery id
--   BENCH_TAIL      a file: what follows the delivery id (end of head + body)
--   BENCH_PREFIX    the per-run prefix of the delivery ids
--   BENCH_THREADS   wrk's -t
--   BENCH_DEADLINE  epoch second after which no request is started (or "")
--   BENCH_QUOTA     total number of requests over all threads (or "")
--   BENCH_MARKERS   a folder: each thread writes a file there once it has sent
--                   its last request and read every answer
--   BENCH_STAMP     "1": the variable part of each request is its send time
--                   (16 digits, microseconds of CLOCK_MONOTONIC) instead of a
--                   delivery id; the server echoes it in the routing key of
--                   the actions report ('.t<digits>"'), so the latency of the
--                   2xx answers alone is measured (wrk's own figures mix in
--                   every answer, the quick 503s of an overload included)
--   BENCH_RETRY_AFTER "1": behave like callers that honour Retry-After: after
--                   a 503 carrying it, a connection of the thread waits that
--                   many seconds before its next request. delay() cannot tell
--                   which connection it runs for, so the waits are handed out
--                   in order to the next requests of the thread: as many
--                   connections wait as 503s were answered, which is what
--                   matters to the server.
--
-- No request is ever left in flight: past the deadline or the quota, delay()
-- holds each connection back before its next request, and a thread stops
-- itself once every request it sent has been answered.  So "answered" is
-- exactly "sent", and the count in the queue can be compared with it.

local function slurp(path)
   local file = assert(io.open(path, "rb"))
   local data = file:read("*a")
   file:close()
   return data
end

local function number(name)
   local value = os.getenv(name)
   if value == nil or value == "" then return nil end
   return tonumber(value)
end

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *tp);
]]
local now_ts = ffi.new("bench_timespec")

-- Microseconds of CLOCK_MONOTONIC (1), the same clock in every thread.
local function now_us()
   ffi.C.clock_gettime(1, now_ts)
   return tonumber(now_ts.tv_sec) * 1000000 + math.floor(tonumber(now_ts.tv_nsec) / 1000)
end

-- Accepted-call latencies are kept as a histogram of 100 µs buckets.
local BUCKET_US = 100

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   head = slurp(os.getenv("BENCH_REQUEST"))
   tail = slurp(os.getenv("BENCH_TAIL"))
   prefix = os.getenv("BENCH_PREFIX") .. "-" .. tid .. "-"
   deadline = number("BENCH_DEADLINE")
   markers = os.getenv("BENCH_MARKERS")
   stamp = os.getenv("BENCH_STAMP") == "1"
   honour_retry = os.getenv("BENCH_RETRY_AFTER") == "1"
   waits = {}
   waits_first = 1
   waits_last = 0
   local total = number("BENCH_QUOTA")
   local nthreads = number("BENCH_THREADS")
   if total ~= nil then
      quota = math.floor(total / nthreads)
      if tid < total % nthreads then quota = quota + 1 end
   end
   started = 0
   built = 0
   answered = 0
   s2xx = 0
   s4xx = 0
   s5xx = 0
   sother = 0
   published = 0
   queued = 0
   failed = 0
   unknown = 0
   ok = 0
   s503 = 0
   s503retry = 0
   accepted = {}
   acount = 0
   amax = 0
   finished = false
end

local function exhausted()
   if quota ~= nil and started >= quota then return true end
   if deadline ~= nil and os.time() >= deadline then return true end
   return false
end

local function finish()
   if finished then return end
   finished = true
   local file = io.open(markers .. "/" .. tid, "w")
   if file then file:write(tostring(started)) file:close() end
   wrk.thread:stop()
end

-- delay() runs before each request that is sent (wrk then calls request()
-- from a timer), so the requests are counted here: two connections cannot
-- both take the last one of the quota, and the one request() call wrk makes
-- on thread 0 to check the script (never sent) is not counted.
function delay()
   if exhausted() then
      return 3600000
   end
   started = started + 1
   if waits_first <= waits_last then
      local wait = waits[waits_first]
      waits[waits_first] = nil
      waits_first = waits_first + 1
      return wait
   end
   return 0
end

function request()
   built = built + 1
   if stamp then
      return head .. string.format("%016.0f", now_us()) .. tail
   end
   return head .. prefix .. built .. tail
end

local find = string.find
local match = string.match
local floor = math.floor

local function time_accepted(body)
   local sent = match(body, "%.t(%d+)\"")
   if sent == nil then return end
   local took = now_us() - tonumber(sent)
   local bucket = floor(took / BUCKET_US)
   accepted[bucket] = (accepted[bucket] or 0) + 1
   acount = acount + 1
   if took > amax then amax = took end
end

-- The report's JSON may be compact or spaced: %s* takes both.
function response(status, headers, body)
   answered = answered + 1
   if status >= 200 and status < 300 then
      s2xx = s2xx + 1
      if find(body, '"status":%s*"published"') then
         published = published + 1
      elseif find(body, '"status":%s*"queued"') then
         queued = queued + 1
      elseif find(body, '"status":%s*"failed"') then
         failed = failed + 1
      elseif body == "ok" then
         ok = ok + 1
      else
         unknown = unknown + 1
      end
      if stamp then time_accepted(body) end
   elseif status >= 400 and status < 500 then
      s4xx = s4xx + 1
   elseif status >= 500 then
      s5xx = s5xx + 1
      if status == 503 then
         s503 = s503 + 1
         local retry = headers["Retry-After"] or headers["retry-after"]
         if retry ~= nil and retry ~= "" then
            s503retry = s503retry + 1
            if honour_retry then
               waits_last = waits_last + 1
               waits[waits_last] = math.floor((tonumber(retry) or 1) * 1000)
            end
         end
      end
   else
      sother = sother + 1
   end
   if answered >= started and exhausted() then
      finish()
   end
end

local names = {"started", "answered", "s2xx", "s4xx", "s5xx", "sother",
               "published", "queued", "failed", "unknown", "ok", "s503", "s503retry"}

-- Percentiles of the merged accepted-call histograms (bucket middles, µs).
local function accepted_summary()
   local merged, total, max = {}, 0, 0
   for _, thread in ipairs(threads) do
      local histogram = thread:get("accepted") or {}
      for bucket, count in pairs(histogram) do
         merged[bucket] = (merged[bucket] or 0) + count
         total = total + count
      end
      local m = thread:get("amax") or 0
      if m > max then max = m end
   end
   local buckets = {}
   for bucket in pairs(merged) do buckets[#buckets + 1] = bucket end
   table.sort(buckets)
   local function percentile(p)
      local wanted, seen = total * p / 100, 0
      for _, bucket in ipairs(buckets) do
         seen = seen + merged[bucket]
         if seen >= wanted then return (bucket + 0.5) * BUCKET_US end
      end
      return 0
   end
   return string.format(
      '"accepted_us": {"count": %d, "p50": %.0f, "p90": %.0f, "p99": %.0f, "max": %.0f}',
      total, percentile(50), percentile(90), percentile(99), max)
end

function done(summary, latency, requests)
   local totals = {}
   for _, name in ipairs(names) do totals[name] = 0 end
   for _, thread in ipairs(threads) do
      for _, name in ipairs(names) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
   end
   local parts = {}
   for _, name in ipairs(names) do
      parts[#parts + 1] = string.format('"%s": %d', name, totals[name])
   end
   local e = summary.errors
   parts[#parts + 1] = string.format(
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.status, e.timeout)
   parts[#parts + 1] = accepted_summary()
   parts[#parts + 1] = string.format('"requests": %d', summary.requests)
   parts[#parts + 1] = string.format('"duration_us": %d', summary.duration)
   parts[#parts + 1] = string.format(
      '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, ' ..
      '"p50": %d, "p90": %d, "p99": %d, "p999": %d}',
      latency.min, latency.mean, latency.max, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9))
   io.write("BENCH-JSON {" .. table.concat(parts, ", ") .. "}\n")
end
