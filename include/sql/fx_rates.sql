-- LTV: exchange rates into the reporting currency (ltv.currency, USD here), by day.
-- rate = units of the reporting currency one unit of `currency` bought on `day`; an order is
-- converted at the latest rate on or before its own day (none: it is left out, and counted).
-- The demo store has no rates table: these are fixed reference rates from 2000 on (hundredths
-- divisible by 4, so no converted cent is ever a tie: every engine rounds it alike). Point this
-- model at your rates table (one row per currency and day), e.g.
--   SELECT currency_code AS currency, rate_date AS day, usd_per_unit AS rate FROM fx_daily
SELECT 'EUR' AS currency, '2000-01-01' AS day, 1.08 AS rate
UNION ALL SELECT 'GBP', '2000-01-01', 1.28
UNION ALL SELECT 'CAD', '2000-01-01', 0.72
