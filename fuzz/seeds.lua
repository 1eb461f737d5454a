-- Writes the seed corpora of the fuzz targets from the known-answer vectors.
--   lua5.4 fuzz/seeds.lua OUTDIR
local cjson = require "cjson"
local out = assert(arg[1], "usage: seeds.lua OUTDIR")

local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(dir, name, data)
  os.execute("mkdir -p " .. out .. "/" .. dir)
  local f = assert(io.open(out .. "/" .. dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end

local sign = cjson.decode(read("spec/fixtures/aliyun-gateway-sign.json"))
for _, v in ipairs(sign.vectors) do
  local parts = { v.method, v.path }
  for name, value in pairs(v.headers_at_signing) do parts[#parts + 1] = name; parts[#parts + 1] = value end
  for _, q in ipairs(v.query) do parts[#parts + 1] = q[1]; parts[#parts + 1] = q[2] end
  write("sign", v.id, table.concat(parts, "\0"))
end

local cb = cjson.decode(read("spec/fixtures/callback-sign.json"))
for _, v in ipairs(cb.vectors) do write("cbscan", v.id, v.body) end

write("headers", "ok", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Ca-Request-Id: A1\r\n\r\n")
write("headers", "gateway", "HTTP/1.1 400 Bad Request\r\nX-Ca-Error-Message: Invalid Signature, Server StringToSign:`GET#`\r\n" ..
  "X-Multi: a\r\nX-Multi: b\r\n folded\r\n\r\n")
write("json", "quirks", '{"code":0,"objects":[{"sn":1,},],"s":",}",}')
write("json", "escapes", '["caf\\u00e9 \\"q\\" \\\\ \\/ \\ud83d\\ude00", -0.5e3, 12345678901234567890, true, false, null]')
for _, v in ipairs(cb.vectors) do write("json", v.id, v.body) end
-- the writer's round trip: the reader's seeds, and readings a device sends
write("jsonwrite", "quirks", '{"code":0,"objects":[{"sn":1,},],"s":",}",}')
write("jsonwrite", "escapes", '["caf\\u00e9 \\"q\\" \\\\ \\/ \\ud83d\\ude00 \\u0001\\u007f", -0.5e3, 12345678901234567890, true, false, null]')
write("jsonwrite", "readings", '[3.659,-48.1,0.30000000000000004,1e300,5e-324,9007199254740993,-0.0,0.0001,1e-05,123456789012345.6]')
for _, v in ipairs(cb.vectors) do write("jsonwrite", v.id, v.body) end
