-- Shopify (Fivetran): the variants of a chunk of products. Reads product_variant. A product
-- without options has one variant titled 'Default Title'.
SELECT id AS variant_id, product_id, sku, title, price
  FROM product_variant
 WHERE product_id IN :product_ids
 ORDER BY product_id, position, id
