-- The live twin's metrics (docs/metrics.md): gauges read from the twin's
-- summary (kinot.fleet: counters kept as updates come) at each scrape,
-- never a pass over the devices; and the syncs, observed by whoever runs
-- them (kinot serve: its sync loop).
local M = {}

local pairs, ipairs, type = pairs, ipairs, type

--- register(registry, twin): the twin's gauges, read at every scrape
function M.register(reg, twin)
  local g = {
    up = reg:gauge("kinot_fleet_store_up", "1 when the twin's store answered this scrape, 0 when it failed"),
    devices = reg:gauge("kinot_devices", "Devices the twin holds (not gone), by kind", { "kind" }),
    gone = reg:gauge("kinot_devices_gone", "Devices the platform no longer lists"),
    occupied = reg:gauge("kinot_spaces_occupied", "Parking spaces occupied (locks and sensors detecting a car)"),
    free = reg:gauge("kinot_spaces_free", "Parking spaces free"),
    spaces = reg:gauge("kinot_spaces", "Parking spaces the twin holds (locks and sensors)"),
    g_occupied = reg:gauge("kinot_group_spaces_occupied", "Parking spaces occupied, by group (zone/level)",
      { "group" }),
    g_free = reg:gauge("kinot_group_spaces_free", "Parking spaces free, by group (zone/level)", { "group" }),
    faulty = reg:gauge("kinot_devices_faulty", "Devices with at least one fault flag"),
    faults = reg:gauge("kinot_device_faults", "Devices with this fault flag set, by fault", { "fault" }),
    low_battery = reg:gauge("kinot_devices_low_battery", "Devices whose battery is low"),
    weak_signal = reg:gauge("kinot_devices_weak_signal", "Devices whose signal (rs_si) is below the weak threshold"),
    offline = reg:gauge("kinot_dtus_offline", "DTU gateways offline"),
    stale = reg:gauge("kinot_devices_stale", "Devices without an update for stale_after seconds"),
    up_locks = reg:gauge("kinot_locks_up", "Locks whose arm is up"),
    updates = reg:counter("kinot_fleet_updates_total",
      "Updates the twin judged, by verdict (added, applied, missed: found by a sync, out_of_order, duplicate)",
      { "verdict" }),
  }
  reg:on_scrape(function()
    local s = twin:summary()
    if not s then
      g.up:set(0)
      return
    end
    g.up:set(1)
    g.devices:set(s.devices.locks, "lock")
    g.devices:set(s.devices.sensors, "sensor")
    g.devices:set(s.devices.dtus, "dtu")
    g.gone:set(s.devices.gone)
    local occ = s.occupancy
    g.occupied:set(occ.occupied)
    g.free:set(occ.free)
    g.spaces:set(occ.total)
    for name, grp in pairs(occ.groups) do
      g.g_occupied:set(grp.occupied, name)
      g.g_free:set(grp.free, name)
    end
    for name, n in pairs(s.faults) do
      if name == "devices" then g.faulty:set(n) else g.faults:set(n, name) end
    end
    g.low_battery:set(s.low_battery)
    g.weak_signal:set(s.weak_signal)
    g.offline:set(s.dtus_offline)
    g.stale:set(s.stale)
    g.up_locks:set(s.locks_up)
    -- the twin's own running counts: written as they stand (a counter of
    -- the store's, not of this registry's increments)
    for _, v in ipairs { "added", "applied", "missed", "out_of_order", "duplicate" } do g.updates:set(s.updates[v], v) end
  end)
  return g
end

--- sync(registry) -> observe(report | nil, err): a sync's outcome (kinot.fleet.sync's report)
function M.sync(reg)
  local syncs = reg:counter("kinot_syncs_total", "Reconciliation scans, by result (ok, failed)", { "result" })
  local duration = reg:histogram("kinot_sync_duration_seconds", "Time a reconciliation scan took", nil,
    { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 })
  local missed = reg:counter("kinot_sync_missed_total",
    "Changes a sync found that no callback had brought (missed callbacks)")
  return function(report, err)
    local r = report or (type(err) == "table" and err.report)
    syncs:inc(1, report and "ok" or "failed")
    if r and r.duration then duration:observe(r.duration) end
    if r and r.missed and r.missed > 0 then missed:inc(r.missed) end
  end
end

return M
