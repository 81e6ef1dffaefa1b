-- Lines of a chunk of orders, with the product's page and image, and whether order and product exist.
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
       CASE WHEN o.order_id IS NULL THEN 0 ELSE 1 END AS order_exists,
       CASE WHEN p.product_id IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM order_lines ol
  LEFT JOIN orders o ON o.order_id = ol.order_id
  LEFT JOIN products p ON p.product_id = ol.product_id
 WHERE ol.order_id IN :order_ids
 ORDER BY ol.order_id, ol.line_id
