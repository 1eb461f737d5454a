-- A path is signed as it is sent (docs/signing.md): the SDK percent-encodes
-- what a URL path cannot hold raw before it signs, so the gateway (which
-- signs the path it receives) agrees; and the simulator's router reads a
-- device path's serial one way: percent-decoded, digits only, within
-- 1..2^53-1, anything else refused with a message naming what it got.
local json = require "kinot.json"
local H = require "helpers"

describe("paths: signed as sent, one serial per path #sim", function()
  local sim, c
  setup(function()
    sim = H.sim { locks = 5, sensors = 5 }
    c = sim.client()
  end)
  teardown(function() sim.stop() end)

  local function get(path)
    local status, headers, body = c:request("GET", path)
    assert.is_number(status, tostring(headers))
    -- past the gateway: no refusal of the signature
    assert.is_nil(headers["x-ca-error-message"], path .. ": " .. tostring(headers["x-ca-error-message"]))
    return status, json.decode(body), body
  end

  it("signs a UTF-8 path as it goes on the wire: the gateway accepts it", function()
    local status, doc, body = get("/lockers/caf\195\169")
    assert.are.equal(200, status)
    assert.are.equal(400, doc.code, body)
    assert.matches('"caf\195\169" is not a serial', doc.message, 1, true)
    -- written encoded by the caller: sent and signed as written
    status, doc = get("/lockers/caf%C3%A9")
    assert.are.equal(200, status)
    assert.are.equal(400, doc.code)
    assert.matches('"caf\195\169" is not a serial', doc.message, 1, true)
    local last = sim.call("GET", "/received").received
    assert.are.equal("/open/lora/v1/lockers/caf%C3%A9", last[#last].path)
    assert.are.equal("/open/lora/v1/lockers/caf%C3%A9", last[#last - 1].path)
  end)

  it("reads percent-encoded digits as the serial they spell, the one that was signed", function()
    local status, doc, body = get("/lockers/%34%31%39%36%30%30%30%30%31")
    assert.are.equal(200, status)
    assert.are.equal(0, doc.code, body)
    assert.are.equal(419600001, doc.objects[1].sn)
    -- counted (and open to faults) as the device path it is
    assert.is_true((sim.counters().endpoints["GET /lockers/{sn}"] or 0) >= 1)
  end)

  it("refuses what is not a serial, naming it, and never reads it as another", function()
    for _, case in ipairs {
      { "/lockers/a;b", '"a;b"' }, { "/lockers/419600001;x", '"419600001;x"' },
      { "/lockers/419600001%2F", '"419600001/"' }, { "/lockers/9007199254740993", '"9007199254740993"' },
      { "/sensors/0", '"0"' }, { "/lockers/", '""' }, { "/dtu_devices/-644200001", '"-644200001"' },
    } do
      local status, doc, body = get(case[1])
      assert.are.equal(200, status, case[1])
      assert.are.equal(400, doc.code, case[1] .. ": " .. body)
      assert.matches(case[2] .. " is not a serial", doc.message, 1, true)
    end
  end)

  it("names an unknown path as it came", function()
    local status, doc = get("/lockers/419600001/x%3Cy")
    assert.are.equal(404, status)
    assert.matches("no such API: GET /lockers/419600001/x%3Cy", doc.message, 1, true)
  end)

  it("refuses a path that could not be sent as signed: '?', '#', '.' and '..' segments", function()
    for _, p in ipairs { "/lockers?limit=10", "/lockers#x", "/lockers/../lockers/419600001", "/./lockers", "/lockers/." } do
      local ok, err = pcall(c.request, c, "GET", p)
      assert.is_false(ok, p)
      assert.are.equal("misuse", err.kind, p)
      assert.matches("path", err.message, 1, true)
    end
  end)
end)
