-- Checkouts started or changed in the data interval, with the sum of their lines.
SELECT ch.checkout_id,
       ch.customer_id,
       ch.email,
       ch.status,
       ch.checkout_url,
       ch.currency,
       ch.subtotal,
       ch.total_tax,
       ch.total,
       ch.order_id,
       ch.sailthru_bid,
       ch.created_at,
       ch.updated_at,
       COALESCE((SELECT ROUND(SUM(cl.line_total), 2) FROM checkout_lines cl WHERE cl.checkout_id = ch.checkout_id), 0)
         AS lines_subtotal
  FROM checkouts ch
 WHERE ch.updated_at >= :window_start
   AND ch.updated_at < :window_end
 ORDER BY ch.checkout_id
