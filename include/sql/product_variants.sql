-- Variants of a chunk of products.
SELECT variant_id, product_id, sku, title, price
  FROM product_variants
 WHERE product_id IN :product_ids
 ORDER BY product_id, variant_id
