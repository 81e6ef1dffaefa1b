-- WooCommerce: the variations of a chunk of variable products (wp_posts of type
-- product_variation, post_parent = the product), sku and price from wp_wc_product_meta_lookup.
-- A simple product has none.
SELECT v.ID AS variant_id,
       v.post_parent AS product_id,
       pl.sku,
       v.post_title AS title,
       pl.min_price AS price
  FROM wp_posts v
  JOIN wp_wc_product_meta_lookup pl ON pl.product_id = v.ID
 WHERE v.post_type = 'product_variation'
   AND v.post_status = 'publish'
   AND v.post_parent IN :product_ids
 ORDER BY v.post_parent, v.ID
