-- WooCommerce (HPOS): checkouts started or changed in the data interval. Core WooCommerce has no
-- abandoned-cart table; the block checkout (Store API) writes the cart as an order in status
-- wc-checkout-draft as soon as the buyer reaches checkout, and the same order becomes the purchase.
-- So a checkout is an order created via 'store-api' (wp_wc_order_operational_data.created_via):
-- open while a draft (or awaiting a payment that failed), completed once placed (order_id = its
-- own id), expired when cancelled unpaid. Reads wp_wc_orders, wp_wc_order_operational_data,
-- wp_woocommerce_order_items and _itemmeta, wp_options. WooCommerce deletes drafts older than a day,
-- so sync checkouts at least hourly. No recovery link in core: checkout_url is the checkout page.
-- Stores on the classic (shortcode) checkout have no drafts: use your abandoned-cart plugin's table.
SELECT o.id AS checkout_id,
       NULLIF(o.customer_id, 0) AS customer_id,
       o.billing_email AS email,
       CASE WHEN o.status IN ('wc-checkout-draft', 'wc-pending', 'wc-failed') THEN 'open'
            WHEN o.status = 'wc-cancelled' AND d.date_paid_gmt IS NULL THEN 'expired'
            ELSE 'completed' END AS status,
       (SELECT MIN(option_value) FROM wp_options WHERE option_name = 'home') || '/checkout/' AS checkout_url,
       o.currency,
       COALESCE(l.items, 0) - d.discount_total_amount AS subtotal,
       o.tax_amount AS total_tax,
       o.total_amount AS total,
       CASE WHEN o.status NOT IN ('wc-checkout-draft', 'wc-pending', 'wc-failed')
                 AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed',
                                                                  'wc-refunded'))
            THEN o.id END AS order_id,
       o.date_created_gmt AS created_at,
       o.date_updated_gmt AS updated_at,
       COALESCE(l.items, 0) AS lines_subtotal
  FROM wp_wc_orders o
  JOIN wp_wc_order_operational_data d ON d.order_id = o.id
  LEFT JOIN (SELECT order_id, SUM(CAST(line_subtotal AS NUMERIC(19, 4))) AS items
               FROM (SELECT i.order_item_id, i.order_id, i.order_item_name,
                MAX(CASE WHEN m.meta_key = '_product_id' THEN m.meta_value END) AS product_id,
                MAX(CASE WHEN m.meta_key = '_variation_id' THEN m.meta_value END) AS variation_id,
                MAX(CASE WHEN m.meta_key = '_qty' THEN m.meta_value END) AS qty,
                MAX(CASE WHEN m.meta_key = '_line_subtotal' THEN m.meta_value END) AS line_subtotal
           FROM wp_woocommerce_order_items i
           JOIN wp_woocommerce_order_itemmeta m ON m.order_item_id = i.order_item_id
                      WHERE i.order_item_type = 'line_item'
                      GROUP BY i.order_item_id, i.order_id, i.order_item_name) li
              GROUP BY order_id) l ON l.order_id = o.id
 WHERE o.type = 'shop_order'
   AND d.created_via = 'store-api'
   AND o.date_updated_gmt >= :window_start
   AND o.date_updated_gmt < :window_end
 ORDER BY o.id
