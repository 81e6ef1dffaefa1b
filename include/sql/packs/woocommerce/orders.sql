-- WooCommerce (HPOS): order headers for a chunk of order ids. Reads wp_wc_orders,
-- wp_wc_order_operational_data, wp_wc_order_addresses (billing), wp_woocommerce_order_items and
-- _itemmeta (lines, coupons). status drops WooCommerce's 'wc-' prefix (on-hold reads as pending); a
-- plugin's own status (wc-shipped...) is no status storesync knows and is quarantined until you map
-- it here. Line amounts are _line_subtotal (before coupons, without tax). The contract has no
-- shipping column and the gate holds total = lines_subtotal + total_tax - total_discounts, so
-- lines_subtotal counts the shipping too. customer_id 0 (a guest) reads as none. Core WooCommerce
-- records no marketing consent: accepts_marketing is absent (no consent); add your plugin's.
SELECT o.id AS order_id,
       NULLIF(o.customer_id, 0) AS customer_id,
       COALESCE(o.billing_email, a.email) AS email,
       CASE o.status WHEN 'wc-on-hold' THEN 'pending' ELSE SUBSTR(o.status, 4) END AS status,
       o.currency,
       COALESCE(l.items, 0) - d.discount_total_amount AS subtotal,
       o.tax_amount AS total_tax,
       d.discount_total_amount AS total_discounts,
       (SELECT MIN(c.order_item_name) FROM wp_woocommerce_order_items c
         WHERE c.order_id = o.id AND c.order_item_type = 'coupon') AS discount_code,
       o.total_amount AS total,
       o.payment_method,
       o.date_created_gmt AS created_at,
       o.date_updated_gmt AS updated_at,
       COALESCE(l.items, 0) + d.shipping_total_amount AS lines_subtotal,
       COALESCE(l.line_count, 0) AS line_count,
       a.first_name,
       a.last_name,
       a.phone,
       a.address_1,
       a.city,
       NULLIF(a.state, '') AS state_code,
       a.country AS country_code,
       a.postcode AS postal_code
  FROM wp_wc_orders o
  JOIN wp_wc_order_operational_data d ON d.order_id = o.id
  LEFT JOIN wp_wc_order_addresses a ON a.order_id = o.id AND a.address_type = 'billing'
  LEFT JOIN (SELECT order_id, SUM(CAST(line_subtotal AS NUMERIC(19, 4))) AS items, COUNT(*) AS line_count
               FROM (SELECT i.order_item_id, i.order_id, i.order_item_name,
                MAX(CASE WHEN m.meta_key = '_product_id' THEN m.meta_value END) AS product_id,
                MAX(CASE WHEN m.meta_key = '_variation_id' THEN m.meta_value END) AS variation_id,
                MAX(CASE WHEN m.meta_key = '_qty' THEN m.meta_value END) AS qty,
                MAX(CASE WHEN m.meta_key = '_line_subtotal' THEN m.meta_value END) AS line_subtotal
           FROM wp_woocommerce_order_items i
           JOIN wp_woocommerce_order_itemmeta m ON m.order_item_id = i.order_item_id
                      WHERE i.order_item_type = 'line_item' AND i.order_id IN :order_ids
                      GROUP BY i.order_item_id, i.order_id, i.order_item_name) li
              GROUP BY order_id) l ON l.order_id = o.id
 WHERE o.id IN :order_ids
   AND o.type = 'shop_order'
 ORDER BY o.id
