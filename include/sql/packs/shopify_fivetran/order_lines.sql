-- Shopify (Fivetran): the lines of a chunk of orders. Reads order_line, "order", product,
-- product_variant, product_media, media_image, shop. line_total is price x quantity before
-- discounts (Shopify keeps discounts on the order: total_discounts). product_url is the shop's
-- domain and the product's handle; image_url the product's first media image.
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
       CASE WHEN o.id IS NULL THEN 0 ELSE 1 END AS order_exists,
       CASE WHEN p.id IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM order_line ol
  LEFT JOIN "order" o ON o.id = ol.order_id
  LEFT JOIN product p ON p.id = ol.product_id
  LEFT JOIN product_variant v ON v.id = ol.variant_id
 WHERE ol.order_id IN :order_ids
 ORDER BY ol.order_id, ol."index", ol.id
