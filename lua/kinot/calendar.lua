-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
-- days_from_civil), for the HTTP dates of answers (kinot.request.classify)
-- and the ISO 8601 times of callbacks (kinot.callback.freshness): no
-- os.time, which reads the local zone.
local floor = math.floor

local M = {}

--- days_from_civil(y, m, d) -> days since 1970-01-01 (negative before it)
function M.days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

return M
