-- Products created or changed in the data interval (the nightly full sync passes the whole past).
SELECT product_id, sku, title, description, brand, category, url, image_url, price,
       compare_at_price, inventory, created_at, updated_at
  FROM products
 WHERE updated_at >= :window_start
   AND updated_at < :window_end
 ORDER BY product_id
