-- wrk script: counts responses by status code across all threads and prints one line per code,
-- "status <code> <count>", after wrk's own summary (tools/bench/run.py parses these lines).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for code, n in pairs(c) do
      totals[code] = (totals[code] or 0) + n
    end
  end
  for code, n in pairs(totals) do
    io.write(string.format("status %d %d\n", code, n))
  end
end
