-- Shopify (Fivetran): the lines of a chunk of checkouts. Reads abandoned_checkout_line, product,
-- product_media, media_image, shop. Fivetran keys these rows by (checkout_id, index): the line id
-- is built from both.
SELECT CAST(l.checkout_id AS VARCHAR(40)) || ':' || CAST(l."index" AS VARCHAR(10)) AS checkout_line_id,
       l.checkout_id,
       l.product_id,
       l.sku,
       COALESCE(p.title, l.title) AS product_name,
       l.quantity,
       l.price AS unit_price,
       ROUND(l.price * l.quantity, 2) AS line_total,
       'https://' || (SELECT MIN(domain) FROM shop) || '/products/' || p.handle AS product_url,
       (SELECT MIN(i.image_url) FROM product_media pm JOIN media_image i ON i.media_id = pm.media_id
         WHERE pm.product_id = l.product_id
           AND pm.media_id = (SELECT MIN(m.media_id) FROM product_media m WHERE m.product_id = l.product_id)) AS image_url
  FROM abandoned_checkout_line l
  LEFT JOIN product p ON p.id = l.product_id
 WHERE l.checkout_id IN :checkout_ids
 ORDER BY l.checkout_id, l."index"
