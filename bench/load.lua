-- The load of bench/run.py: wrk (Debian's package) sending one POST body, with a fresh id in each request.
--   wrk -t1 -c32 -d10s --timeout 30s -s bench/load.lua <url> -- <body file> <run id> [<API key> [<accounts file>]]
-- `__ID__` in the body becomes `<run id>-<n>` (n counts this thread's requests), and `__ACCOUNT__` the next line of
-- the accounts file in turn. Last, it prints one line of JSON: requests, seconds, p50_us, p99_us, non2xx, errors.
local template, run = nil, nil
local accounts = {}
local headers = {["content-type"] = "application/json"}
local sent = 0

local function literal(text)  -- a replacement string for gsub, which reads "%" as an escape
  return (text:gsub("%%", "%%%%"))
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  template = file:read("*a")
  file:close()
  run = literal(args[2])
  if args[3] and args[3] ~= "" then headers["authorization"] = "Bearer " .. args[3] end
  if args[4] then
    for line in io.lines(args[4]) do
      if line ~= "" then accounts[#accounts + 1] = literal(line) end
    end
  end
end

function request()
  sent = sent + 1
  local body = template:gsub("__ID__", run .. "-" .. sent)
  if #accounts > 0 then body = body:gsub("__ACCOUNT__", accounts[sent % #accounts + 1]) end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, "non2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
