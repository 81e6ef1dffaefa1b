-- Customers created or changed in the data interval.
SELECT customer_id, email, first_name, last_name, phone, company, address_1, city, state,
       state_code, country, country_code, postal_code, accepts_marketing, created_at, updated_at
  FROM customers
 WHERE updated_at >= :window_start
   AND updated_at < :window_end
 ORDER BY customer_id
