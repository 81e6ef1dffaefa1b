-- Shopify (Fivetran): lines loaded in the data interval (order_line._fivetran_synced) whose order
-- is not in "order" (a partial sync, a deleted order). Reads order_line, "order", product, shop,
-- product_media, media_image. Quarantined by the gate (order_exists = 0).
SELECT ol.id AS line_id,
       ol.order_id,
       ol.product_id,
       ol.variant_id,
       COALESCE(ol.sku, v.sku) AS sku,
       COALESCE(p.title, ol.title, ol.name) AS product_name,
       ol.quantity,
       ol.price AS unit_price,
       ROUND(ol.price * ol.quantity, 2) AS line_total,
       'https://' || (SELECT MIN(domain) FROM shop) || '/products/' || p.handle AS product_url,
       (SELECT MIN(i.image_url) FROM product_media pm JOIN media_image i ON i.media_id = pm.media_id
         WHERE pm.product_id = ol.product_id
           AND pm.media_id = (SELECT MIN(m.media_id) FROM product_media m WHERE m.product_id = ol.product_id)) AS image_url,
       p.product_type AS category,
       0 AS order_exists,
       CASE WHEN p.id IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM order_line ol
  LEFT JOIN product p ON p.id = ol.product_id
  LEFT JOIN product_variant v ON v.id = ol.variant_id
 WHERE ol._fivetran_synced >= :window_start
   AND ol._fivetran_synced < :window_end
   AND NOT EXISTS (SELECT 1 FROM "order" o WHERE o.id = ol.order_id)
 ORDER BY ol.id
