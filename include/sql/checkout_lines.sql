-- Lines of a chunk of checkouts, with the product's page and image.
SELECT cl.checkout_line_id,
       cl.checkout_id,
       cl.product_id,
       cl.sku,
       COALESCE(p.title, cl.product_name) AS product_name,
       cl.quantity,
       cl.unit_price,
       cl.line_total,
       p.url AS product_url,
       p.image_url
  FROM checkout_lines cl
  LEFT JOIN products p ON p.product_id = cl.product_id
 WHERE cl.checkout_id IN :checkout_ids
 ORDER BY cl.checkout_id, cl.checkout_line_id
