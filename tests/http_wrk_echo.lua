-- wrk script for tests/http_wrk.sh: POST /echo with a fixed 1 KiB body; each
-- response's body must be the body sent. done() prints "echo mismatches N"
-- (summed over wrk's threads) for the script to check.
local body = {}
for i = 1, 1024 do
  body[i] = string.char(33 + (i * 7) % 94)
end
wrk.method = "POST"
wrk.path = "/echo"
wrk.body = table.concat(body)
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

function setup(thread)
  thread:set("mismatches", 0)
  thread:set("checked", 0)
  table.insert(threads, thread)
end

function init(args)
  mismatches = 0
  checked = 0
end

function response(status, headers, resp_body)
  checked = checked + 1
  if status ~= 200 or resp_body ~= wrk.body then
    mismatches = mismatches + 1
  end
end

function done(summary, latency, requests)
  local m, c = 0, 0
  for _, thread in ipairs(threads) do
    m = m + thread:get("mismatches")
    c = c + thread:get("checked")
  end
  io.write(string.format("echo checked %d mismatches %d\n", c, m))
end
