-- wrk script: each thread sends its own share of pre-signed unique webhooks (file from make-webhooks.py).
-- Usage: wrk -s webhooks.lua URL -- FILE PATH
local counter = 1
local threads = {}

function setup(thread)
  thread:set("id", counter)
  thread:set("nthreads", 0)
  table.insert(threads, thread)
  counter = counter + 1
end

local reqs = {}
local i = 0

function init(args)
  local file, path = args[1], args[2] or "/webhooks/stripe"
  local n = 0
  for _, _ in pairs(threads) do n = n + 1 end
  local count = tonumber(os.getenv("WRK_THREADS") or "2")
  local line_no = 0
  for line in io.lines(file) do
    line_no = line_no + 1
    if (line_no % count) == (id - 1) then
      local tab = line:find("\t", 1, true)
      local tab2 = line:find("\t", tab + 1, true)
      local sig, hub, body = line:sub(1, tab - 1), line:sub(tab + 1, tab2 - 1), line:sub(tab2 + 1)
      reqs[#reqs + 1] = wrk.format("POST", path, {["Stripe-Signature"] = sig, ["X-Hub-Signature-256"] = hub,
                                                  ["Content-Type"] = "application/json"}, body)
    end
  end
end

function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 and not reported then
    reported = true
    io.stderr:write("first non-200 answer: " .. status .. " " .. body .. "\n")
  end
end

function done(summary, latency, requests)
  io.write(string.format("p50_us=%d p99_us=%d requests=%d errors=%d\n",
    latency:percentile(50), latency:percentile(99), summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
