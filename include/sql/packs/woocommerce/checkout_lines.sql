-- WooCommerce (HPOS): the lines of a chunk of checkouts (block-checkout orders: a checkout's id is
-- its order's), read as order_lines.sql reads them.
SELECT li.order_item_id AS checkout_line_id,
       li.order_id AS checkout_id,
       CAST(li.product_id AS BIGINT) AS product_id,
       COALESCE(v.sku, pl.sku) AS sku,
       COALESCE(p.post_title, li.order_item_name) AS product_name,
       CAST(li.qty AS INTEGER) AS quantity,
       ROUND(CAST(li.line_subtotal AS NUMERIC(19, 4)) / CAST(li.qty AS NUMERIC(19, 4)), 2) AS unit_price,
       ROUND(CAST(li.line_subtotal AS NUMERIC(19, 4)), 2) AS line_total,
       (SELECT MIN(option_value) FROM wp_options WHERE option_name = 'home') || '/product/' || p.post_name AS product_url,
       (SELECT MIN(img.guid) FROM wp_postmeta t JOIN wp_posts img ON CAST(img.ID AS VARCHAR(40)) = t.meta_value
         WHERE t.post_id = p.ID AND t.meta_key = '_thumbnail_id') AS image_url
  FROM (SELECT i.order_item_id, i.order_id, i.order_item_name,
                MAX(CASE WHEN m.meta_key = '_product_id' THEN m.meta_value END) AS product_id,
                MAX(CASE WHEN m.meta_key = '_variation_id' THEN m.meta_value END) AS variation_id,
                MAX(CASE WHEN m.meta_key = '_qty' THEN m.meta_value END) AS qty,
                MAX(CASE WHEN m.meta_key = '_line_subtotal' THEN m.meta_value END) AS line_subtotal
           FROM wp_woocommerce_order_items i
           JOIN wp_woocommerce_order_itemmeta m ON m.order_item_id = i.order_item_id
         WHERE i.order_item_type = 'line_item' AND i.order_id IN :checkout_ids
         GROUP BY i.order_item_id, i.order_id, i.order_item_name) li
  LEFT JOIN wp_posts p ON p.ID = CAST(li.product_id AS BIGINT) AND p.post_type = 'product'
  LEFT JOIN wp_wc_product_meta_lookup pl ON pl.product_id = p.ID
  LEFT JOIN wp_wc_product_meta_lookup v ON v.product_id = CAST(NULLIF(li.variation_id, '0') AS BIGINT)
 ORDER BY li.order_id, li.order_item_id
