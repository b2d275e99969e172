-- The load of bench/run.py: wrk (Debian's package) sending one POST body, with a fresh id in each request.
--   wrk -t1 -c32 -d10s --timeout 30s -s bench/load.lua <url> -- <body file> <run id> [<API key> [<accounts file>]]
-- `__ID__` in the body becomes `<run id>-<n>` (n counts this thread's requests), and `__ACCOUNT__` the next line of
-- the accounts file in turn; a line "<account id> <API key>" sends that request with its own key. Last, it prints one line of JSON: requests, seconds, p50_us, p99_us, non2xx, errors,
-- and failed: the answers with a GraphQL error or a user error (a 200 all the same), which a fast run must not hide.
local template, run = nil, nil
local accounts = {}
local account_keys = {}  -- by line, where the line has a key of its own
local headers = {["content-type"] = "application/json"}
local key_header = nil
local sent = 0
failed = 0  -- global: read by done() through the thread (wrk runs done() in a Lua state of its own)
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local function literal(text)  -- a replacement string for gsub, which reads "%" as an escape
  return (text:gsub("%%", "%%%%"))
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  template = file:read("*a")
  file:close()
  run = literal(args[2])
  if args[3] and args[3] ~= "" then key_header = "Bearer " .. args[3] end
  if args[4] then
    for line in io.lines(args[4]) do
      local account, key = line:match("^(%S+)%s*(%S*)$")
      if account then
        accounts[#accounts + 1] = literal(account)
        if key ~= "" then account_keys[#accounts] = "Bearer " .. key end
      end
    end
  end
end

function request()
  sent = sent + 1
  local body = template:gsub("__ID__", run .. "-" .. sent)
  headers["authorization"] = key_header
  if #accounts > 0 then
    local line = sent % #accounts + 1
    body = body:gsub("__ACCOUNT__", accounts[line])
    headers["authorization"] = account_keys[line] or key_header
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, _, body)
  if body:find('"errors"', 1, true) or body:find('"userErrors":%s*%[%s*{') then failed = failed + 1 end
end

function done(summary, latency, _)
  local errors, answered_failed = summary.errors, 0
  for _, thread in ipairs(threads) do answered_failed = answered_failed + thread:get("failed") end
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, "non2xx": %d, "errors": %d, "failed": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, answered_failed))
end
