-- Shopify (Fivetran): order headers for a chunk of order ids. Reads "order", order_line,
-- order_shipping_line, order_discount_code, customer. Amounts are Shopify's shop-currency columns
-- (total_price, total_tax, total_discounts, currency). status is mapped onto storesync's known
-- statuses (cancelled, refunded, fulfilled, pending, processing); the status *changes* come from
-- order_changes.sql. The contract has no shipping column and the quality gate holds
-- total = lines_subtotal + total_tax - total_discounts, so lines_subtotal here is the line items
-- plus the shipping lines (minus the tax a tax-inclusive shop's prices already hold).
-- Name, phone and address are the order's billing address (a guest has no customer row).
SELECT o.id AS order_id,
       o.customer_id,
       COALESCE(o.email, c.email) AS email,
       CASE WHEN o.cancelled_at IS NOT NULL OR o.financial_status = 'voided' THEN 'cancelled'
            WHEN o.financial_status = 'refunded' THEN 'refunded'
            WHEN o.fulfillment_status = 'fulfilled' THEN 'fulfilled'
            WHEN o.financial_status IN ('pending', 'authorized') THEN 'pending'
            ELSE 'processing' END AS status,
       o.currency,
       o.subtotal_price AS subtotal,
       o.total_tax,
       o.total_discounts,
       (SELECT MIN(d.code) FROM order_discount_code d WHERE d.order_id = o.id AND d."index" = 0) AS discount_code,
       o.total_price AS total,
       o.gateway AS payment_method,
       o.created_at,
       o.updated_at,
       COALESCE(l.items, 0)
         + COALESCE((SELECT SUM(s.price) FROM order_shipping_line s WHERE s.order_id = o.id), 0)
         - CASE WHEN o.taxes_included THEN o.total_tax ELSE 0 END AS lines_subtotal,
       COALESCE(l.line_count, 0) AS line_count,
       o.billing_address_first_name AS first_name,
       o.billing_address_last_name AS last_name,
       o.billing_address_phone AS phone,
       o.buyer_accepts_marketing AS accepts_marketing,
       o.billing_address_address_1 AS address_1,
       o.billing_address_city AS city,
       o.billing_address_province_code AS state_code,
       o.billing_address_country_code AS country_code,
       o.billing_address_zip AS postal_code
  FROM "order" o
  LEFT JOIN customer c ON c.id = o.customer_id
  LEFT JOIN (SELECT order_id, ROUND(SUM(price * quantity), 2) AS items, COUNT(*) AS line_count
               FROM order_line
              WHERE order_id IN :order_ids
              GROUP BY order_id) l ON l.order_id = o.id
 WHERE o.id IN :order_ids
   AND COALESCE(o.test, FALSE) = FALSE AND COALESCE(o._fivetran_deleted, FALSE) = FALSE
 ORDER BY o.id
