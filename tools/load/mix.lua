-- wrk script of tools/load/run.sh: a count-bounded mix of valid images, invalid bodies and
-- oversized bodies against POST /classify, with a status tally and latency percentiles.
--
--   wrk -t2 -c64 -d600s --timeout 60s -s tools/load/mix.lua http://127.0.0.1:PORT -- \
--       <payload dir> <total requests> <threads>
--
-- The payload dir holds the bodies written by `load-prepare` (tools/load/prepare.rs); each
-- file name starts with the status it must get ("200-photo.jpg", "413-oversized.bin", ...).
-- Each thread stops after its share of <total requests> responses, so exactly that many are
-- answered, and drops a marker file "<payload dir>/.stopped-<thread>": wrk's main thread
-- sleeps for the whole -d duration regardless, so run.sh sends SIGINT once every thread has
-- stopped, which makes wrk join the threads and call done(). done() prints one line:
--   LOAD responses=... s200=... s400=... s413=... s415=... s503=... s5xx=... unexpected=...
--        p50_ms=... p99_ms=... max_ms=... err_connect=... err_read=... err_write=... err_timeout=...

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local files = {
  "200-photo.jpg", "200-small.jpg", "200-square.png", "200-base64.json", "200-multipart.form",
  "415-not-an-image.bin", "400-malformed.json", "400-bad-base64.json", "400-truncated.png",
  "413-oversized.bin",
}
local content_types = {
  jpg = "image/jpeg", png = "image/png", json = "application/json",
  bmp = "image/bmp", webp = "image/webp",
  form = "multipart/form-data; boundary=loadtestboundary7MA4YWxk",
  bin = "application/octet-stream",
}

local requests = {}
local dir = nil
local stopped = false
local quota = 0
local answered = 0
local index = 0
counts = {}
unexpected = 0

local function read(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local total, nthreads
  dir, total, nthreads = args[1], tonumber(args[2]), tonumber(args[3])
  -- load-prepare's `hostile` mode lists its extra bodies here (tools/load/prepare.rs).
  local extra = io.open(dir .. "/hostile.txt", "r")
  if extra then
    for name in extra:lines() do
      table.insert(files, name)
    end
    extra:close()
  end
  quota = math.floor(total / nthreads)
  if id <= total % nthreads then
    quota = quota + 1
  end
  for _, name in ipairs(files) do
    local ext = name:match("%.(%w+)$")
    local headers = { ["Content-Type"] = content_types[ext] }
    table.insert(requests, wrk.format("POST", "/classify", headers, read(dir .. "/" .. name)))
  end
  index = id * 3 -- threads start at different places in the cycle
end

function request()
  index = index + 1
  return requests[(index % #requests) + 1]
end

local expected = { [200] = true, [400] = true, [413] = true, [415] = true }

function response(status, headers, body)
  if stopped then
    return -- answered after this thread's share, while its event loop winds down
  end
  counts[status] = (counts[status] or 0) + 1
  if not expected[status] then
    unexpected = unexpected + 1
  end
  answered = answered + 1
  if answered >= quota and not stopped then
    stopped = true
    local marker = io.open(dir .. "/.stopped-" .. id, "w")
    if marker then
      marker:close()
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, _)
  local total, by_status, bad = 0, {}, 0
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for status, n in pairs(c) do
      by_status[status] = (by_status[status] or 0) + n
      total = total + n
    end
    bad = bad + thread:get("unexpected")
  end
  local s5xx = 0
  for status, n in pairs(by_status) do
    if status >= 500 then
      s5xx = s5xx + n
    end
  end
  local e = summary.errors
  io.write(string.format(
    "LOAD responses=%d s200=%d s400=%d s413=%d s415=%d s503=%d s5xx=%d unexpected=%d " ..
    "p50_ms=%.1f p99_ms=%.1f max_ms=%.1f err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    total, by_status[200] or 0, by_status[400] or 0, by_status[413] or 0, by_status[415] or 0,
    by_status[503] or 0, s5xx, bad,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout))
end
