-- Lines recorded in the data interval whose order does not exist (orphans). Lines are otherwise
-- read only through their orders, so these would never be seen: the quality gate quarantines them
-- (order_exists = 0). Bounded by the window through the lines' own timestamp; a store whose lines
-- carry none can delete this file (the model is optional).
SELECT ol.line_id,
       ol.order_id,
       ol.product_id,
       ol.variant_id,
       ol.sku,
       COALESCE(p.title, ol.product_name) AS product_name,
       ol.quantity,
       ol.unit_price,
       ol.line_total,
       p.url AS product_url,
       p.image_url,
       p.category,
       0 AS order_exists,
       CASE WHEN p.product_id IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM order_lines ol
  LEFT JOIN products p ON p.product_id = ol.product_id
 WHERE ol.created_at >= :window_start
   AND ol.created_at < :window_end
   AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = ol.order_id)
 ORDER BY ol.line_id
