-- kinot.metrics in a user's own nginx (docs/metrics.md): the callback
-- handler given a registry counts a handler failure, times the handler's
-- call under both acknowledgements, and a full lua_shared_dict never
-- reaches the platform's answer: every callback still answered as it
-- should be, the error logged once, and the counts written once there is
-- room again (nothing lost).
local H = require "helpers"

local SECRET = "5e2b9c1d7a3f4e6b8c0d2e4f6a8b0c1d"
local function signed(body, secret) return H.signed(body, secret or SECRET) end
local iso8 = H.iso8
local function status_body(sn, t)
  return '{"sn":' .. sn .. ',"locked":1,"car_detected":0,"updated_at":"' .. iso8(t or os.time()) .. '"}'
end

local samples = H.samples

local function host(dict_size)
  return H.nginx {
    http = [[
      lua_shared_dict metrics ]] .. dict_size .. [[;
      lua_shared_dict dedupe 1m;
      lua_shared_dict dedupe_busy 1m;
      init_by_lua_block {
        registry = require("kinot.metrics").new { dict = "metrics" }
        local function on_status(ev)
          if ev.sn == 419600666 then error("the handler broke") end
        end
        for _, ack in ipairs { "after_handler", "immediate" } do
          _G["receive_" .. ack] = require("kinot.callback").handler {
            secret = "]] .. SECRET .. [[", ack = ack, dedupe = "dedupe", on_status = on_status, metrics = registry,
          }
        end
      }
    ]],
    server = [[
      location = /cb { content_by_lua_block { receive_after_handler() } }
      location = /cb_immediate { content_by_lua_block { receive_immediate() } }
      location = /metrics { content_by_lua_block { registry:nginx() } }
      location = /fill {
        content_by_lua_block {
          local d, n = ngx.shared.metrics, 0
          while d:safe_add("junk" .. n, "x") do n = n + 1 end
          ngx.say(n)
        }
      }
      location = /unfill {
        content_by_lua_block {
          local d = ngx.shared.metrics
          for i = 0, tonumber(ngx.var.arg_n) do d:delete("junk" .. i) end
          ngx.say("ok")
        }
      }
    ]],
  }
end

local function wait(seconds) H.wait_for(function() return false end, seconds) end

describe("kinot.metrics with the callback handler in a user's nginx #nginx", function()
  it("counts a handler failure (500), and times the handler's call under both acknowledgements", function()
    local ng = host("1m")
    finally(function() ng.stop() end)
    assert.are.equal(500, H.raw("POST", ng.url .. "/cb", signed(status_body(419600666))).status)
    assert.are.equal(200, H.raw("POST", ng.url .. "/cb", signed(status_body(419600001))).status)
    assert.are.equal(200, H.raw("POST", ng.url .. "/cb_immediate", signed(status_body(419600002))).status)
    local v = H.wait_for(function()
      local s = samples(H.raw("GET", ng.url .. "/metrics").body)
      return s.kinot_callback_handler_delay_seconds_count == 3 and s
    end, 3)
    assert.is_table(v, H.raw("GET", ng.url .. "/metrics").body)
    assert.are.equal(1, v.kinot_callback_handler_failures_total)
    assert.are.equal(3, v['kinot_callbacks_received_total{kind="status_changed"}'])
    assert.are.equal(0, v.kinot_callbacks_duplicate_total)
    -- the failed one is not remembered: its redelivery is handled again (and fails again), not a duplicate
    assert.are.equal(500, H.raw("POST", ng.url .. "/cb", signed(status_body(419600666))).status)
    wait(1.3)
    v = samples(H.raw("GET", ng.url .. "/metrics").body)
    assert.are.equal(2, v.kinot_callback_handler_failures_total)
    assert.are.equal(0, v.kinot_callbacks_duplicate_total)
    -- ack = "immediate": acknowledged at once, the handler fails later in a timer: counted all the same
    assert.are.equal(200, H.raw("POST", ng.url .. "/cb_immediate", signed(status_body(419600666, os.time() + 1))).status)
    v = H.wait_for(function()
      local s = samples(H.raw("GET", ng.url .. "/metrics").body)
      return s.kinot_callback_handler_failures_total == 3 and s
    end, 3)
    assert.is_table(v, "the immediate handler's failure was not counted")
  end)

  it("a full dict: every callback answered as it should be, one error line, the counts written once there is room",
    function()
      local ng = host("32k")
      finally(function() ng.stop() end)
      local junk = tonumber(H.raw("GET", ng.url .. "/fill").body)
      assert.is_true(junk > 0)
      local t = os.time()
      for i = 1, 50 do
        assert.are.equal(200, H.raw("POST", ng.url .. "/cb", signed(status_body(419610000 + i, t))).status)
        assert.are.equal(401, H.raw("POST", ng.url .. "/cb", signed(status_body(419620000 + i, t), "forged")).status)
      end
      -- a duplicate is still a duplicate (the dedupe dict is another dict)
      assert.are.equal(200, H.raw("POST", ng.url .. "/cb", signed(status_body(419610001, t))).status)
      wait(2.5) -- two flushes, both failing
      local res = H.raw("GET", ng.url .. "/metrics")
      assert.are.equal(200, res.status)
      local _, lines = ng.log():gsub("kinot metrics: the lua_shared_dict is full", "")
      assert.are.equal(1, lines, ng.log())
      -- room again: what waited in the worker is written, nothing lost
      assert.are.equal("ok\n", H.raw("GET", ng.url .. "/unfill?n=" .. junk).body)
      local v = H.wait_for(function()
        local s = samples(H.raw("GET", ng.url .. "/metrics").body)
        return s['kinot_callbacks_received_total{kind="status_changed"}'] == 50 and s
      end, 3)
      assert.is_table(v, H.raw("GET", ng.url .. "/metrics").body)
      assert.are.equal(50, v['kinot_callbacks_refused_total{reason="bad_sign"}'])
      assert.are.equal(1, v.kinot_callbacks_duplicate_total)
      assert.are.equal(50, v.kinot_callback_handler_delay_seconds_count)
    end)
end)
