-- WooCommerce (HPOS): the lines of a chunk of orders, from wp_woocommerce_order_items (type
-- line_item) and their _itemmeta (_product_id, _variation_id, _qty, _line_subtotal), with
-- wp_posts, wp_postmeta (_thumbnail_id), wp_wc_product_meta_lookup (sku) and wp_options (home).
-- line_total is _line_subtotal (before coupons, without tax); unit_price = line_total / _qty.
-- product_url assumes the default permalink base /product/<slug>. The items have no timestamp:
-- orphan lines cannot be found per window (orphan_order_lines.sql is absent).
SELECT li.order_item_id AS line_id,
       li.order_id,
       CAST(li.product_id AS BIGINT) AS product_id,
       CAST(NULLIF(li.variation_id, '0') AS BIGINT) AS variant_id,
       COALESCE(v.sku, pl.sku) AS sku,
       COALESCE(p.post_title, li.order_item_name) AS product_name,
       CAST(li.qty AS INTEGER) AS quantity,
       ROUND(CAST(li.line_subtotal AS NUMERIC(19, 4)) / CAST(li.qty AS NUMERIC(19, 4)), 2) AS unit_price,
       ROUND(CAST(li.line_subtotal AS NUMERIC(19, 4)), 2) AS line_total,
       (SELECT MIN(option_value) FROM wp_options WHERE option_name = 'home') || '/product/' || p.post_name AS product_url,
       (SELECT MIN(img.guid) FROM wp_postmeta t JOIN wp_posts img ON CAST(img.ID AS VARCHAR(40)) = t.meta_value
         WHERE t.post_id = p.ID AND t.meta_key = '_thumbnail_id') AS image_url,
       CASE WHEN o.id IS NULL THEN 0 ELSE 1 END AS order_exists,
       CASE WHEN p.ID IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM (SELECT i.order_item_id, i.order_id, i.order_item_name,
                MAX(CASE WHEN m.meta_key = '_product_id' THEN m.meta_value END) AS product_id,
                MAX(CASE WHEN m.meta_key = '_variation_id' THEN m.meta_value END) AS variation_id,
                MAX(CASE WHEN m.meta_key = '_qty' THEN m.meta_value END) AS qty,
                MAX(CASE WHEN m.meta_key = '_line_subtotal' THEN m.meta_value END) AS line_subtotal
           FROM wp_woocommerce_order_items i
           JOIN wp_woocommerce_order_itemmeta m ON m.order_item_id = i.order_item_id
         WHERE i.order_item_type = 'line_item' AND i.order_id IN :order_ids
         GROUP BY i.order_item_id, i.order_id, i.order_item_name) li
  LEFT JOIN wp_wc_orders o ON o.id = li.order_id AND o.type = 'shop_order'
  LEFT JOIN wp_posts p ON p.ID = CAST(li.product_id AS BIGINT) AND p.post_type = 'product'
  LEFT JOIN wp_wc_product_meta_lookup pl ON pl.product_id = p.ID
  LEFT JOIN wp_wc_product_meta_lookup v ON v.product_id = CAST(NULLIF(li.variation_id, '0') AS BIGINT)
 ORDER BY li.order_id, li.order_item_id
