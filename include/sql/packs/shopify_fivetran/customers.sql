-- Shopify (Fivetran): customers created or changed in the data interval. Reads customer and
-- customer_address (the default address). accepts_marketing is Shopify's email consent flag (on
-- newer API versions, email_marketing_consent_state = 'subscribed': adapt it if yours has only that).
-- Rows Fivetran marks deleted are left out.
SELECT c.id AS customer_id,
       c.email,
       c.first_name,
       c.last_name,
       c.phone,
       a.company,
       a.address_1,
       a.city,
       a.province AS state,
       a.province_code AS state_code,
       a.country,
       a.country_code,
       a.zip AS postal_code,
       c.accepts_marketing,
       c.created_at,
       c.updated_at
  FROM customer c
  LEFT JOIN customer_address a ON a.customer_id = c.id AND a.is_default = TRUE
 WHERE c.updated_at >= :window_start
   AND c.updated_at < :window_end
   AND COALESCE(c._fivetran_deleted, FALSE) = FALSE
 ORDER BY c.id
