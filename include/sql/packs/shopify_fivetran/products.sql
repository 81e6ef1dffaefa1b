-- Shopify (Fivetran): active products created or changed in the data interval (drafts and
-- archived products are not for sale: left out). Reads product, product_variant, product_media,
-- media_image, shop. sku, price, compare_at_price are the first variant's (position 1); inventory
-- the sum over variants; url the shop's domain and the handle; image_url the first media image.
SELECT p.id AS product_id,
       v.sku,
       p.title,
       p.vendor AS brand,
       p.product_type AS category,
       'https://' || (SELECT MIN(domain) FROM shop) || '/products/' || p.handle AS url,
       (SELECT MIN(i.image_url) FROM product_media pm JOIN media_image i ON i.media_id = pm.media_id
         WHERE pm.product_id = p.id
           AND pm.media_id = (SELECT MIN(m.media_id) FROM product_media m WHERE m.product_id = p.id)) AS image_url,
       v.price,
       v.compare_at_price,
       (SELECT SUM(s.inventory_quantity) FROM product_variant s WHERE s.product_id = p.id) AS inventory,
       p.created_at,
       p.updated_at
  FROM product p
  LEFT JOIN product_variant v
    ON v.product_id = p.id
   AND v.position = (SELECT MIN(f.position) FROM product_variant f WHERE f.product_id = p.id)
 WHERE p.updated_at >= :window_start
   AND p.updated_at < :window_end
   AND p.status = 'active'
   AND COALESCE(p._fivetran_deleted, FALSE) = FALSE
 ORDER BY p.id
