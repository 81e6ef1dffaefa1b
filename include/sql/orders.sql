-- Order headers for a chunk of order ids, with what the quality gate and the vendors need.
SELECT o.order_id,
       o.customer_id,
       o.email,
       o.status,
       o.currency,
       o.subtotal,
       o.total_tax,
       o.total_discounts,
       o.discount_code,
       o.total,
       o.payment_method,
       o.sailthru_bid,
       o.created_at,
       o.updated_at,
       COALESCE(l.lines_subtotal, 0) AS lines_subtotal,
       COALESCE(l.line_count, 0) AS line_count,
       c.first_name,
       c.last_name,
       c.phone,
       c.accepts_marketing,
       c.address_1,
       c.city,
       c.state_code,
       c.country_code,
       c.postal_code
  FROM orders o
  LEFT JOIN customers c ON c.customer_id = o.customer_id
  LEFT JOIN (SELECT order_id, ROUND(SUM(line_total), 2) AS lines_subtotal, COUNT(*) AS line_count
               FROM order_lines
              WHERE order_id IN :order_ids
              GROUP BY order_id) l ON l.order_id = o.order_id
 WHERE o.order_id IN :order_ids
 ORDER BY o.order_id
