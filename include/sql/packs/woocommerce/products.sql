-- WooCommerce: published products created or changed in the data interval. Reads wp_posts
-- (post_type 'product'), wp_postmeta (_thumbnail_id, _regular_price), wp_wc_product_meta_lookup
-- (sku, price, stock) and wp_options (home). price is the lookup's min_price (a variable product's
-- cheapest variation); compare_at_price the regular price when the product is on sale. url assumes
-- the default permalink base /product/<slug>; image_url is the featured image's guid (the upload's
-- URL). Categories live in wp_term_relationships: add them if your vendors use them.
SELECT p.ID AS product_id,
       pl.sku,
       p.post_title AS title,
       p.post_excerpt AS description,
       (SELECT MIN(option_value) FROM wp_options WHERE option_name = 'home') || '/product/' || p.post_name AS url,
       (SELECT MIN(img.guid) FROM wp_postmeta t JOIN wp_posts img ON CAST(img.ID AS VARCHAR(40)) = t.meta_value
         WHERE t.post_id = p.ID AND t.meta_key = '_thumbnail_id') AS image_url,
       pl.min_price AS price,
       (SELECT MIN(CAST(r.meta_value AS NUMERIC(19, 4))) FROM wp_postmeta r
         WHERE r.post_id = p.ID AND r.meta_key = '_regular_price' AND r.meta_value <> ''
           AND CAST(r.meta_value AS NUMERIC(19, 4)) > pl.min_price) AS compare_at_price,
       pl.stock_quantity AS inventory,
       p.post_date_gmt AS created_at,
       p.post_modified_gmt AS updated_at
  FROM wp_posts p
  LEFT JOIN wp_wc_product_meta_lookup pl ON pl.product_id = p.ID
 WHERE p.post_type = 'product'
   AND p.post_status = 'publish'
   AND p.post_modified_gmt >= :window_start
   AND p.post_modified_gmt < :window_end
 ORDER BY p.ID
