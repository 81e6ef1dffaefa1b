-- WooCommerce: registered customers active or registered in the data interval, from
-- wp_wc_customer_lookup (WooCommerce Analytics' table: one row per customer, guests included).
-- customer_id is the WordPress user id (what wp_wc_orders.customer_id holds); guests (no user_id)
-- are no customer account and are left out. The lookup keeps no change time: date_last_active
-- stands for it (a profile whose content did not change is no new delivery). Core WooCommerce
-- records no marketing consent: accepts_marketing is absent (no consent); add your plugin's.
SELECT user_id AS customer_id,
       email,
       first_name,
       last_name,
       city,
       NULLIF(state, '') AS state_code,
       country AS country_code,
       postcode AS postal_code,
       COALESCE(date_registered, date_last_active) AS created_at,
       COALESCE(date_last_active, date_registered) AS updated_at
  FROM wp_wc_customer_lookup
 WHERE user_id IS NOT NULL
   AND COALESCE(date_last_active, date_registered) >= :window_start
   AND COALESCE(date_last_active, date_registered) < :window_end
 ORDER BY user_id
