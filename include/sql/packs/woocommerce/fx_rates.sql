-- WooCommerce, LTV: exchange rates into the reporting currency ([ltv] currency), by day.
-- WooCommerce core keeps no rates (a currency plugin may: read its table instead). This reads
-- storesync_fx_rates (currency, day, rate: reporting-currency units per unit of currency, from
-- that day on), a table you keep. A store with
-- one currency sets [ltv] fx_rates_model = "" and deletes this file.
SELECT currency, day, rate
  FROM storesync_fx_rates
