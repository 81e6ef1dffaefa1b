-- Shopify (Fivetran): checkouts started or changed in the data interval. Reads abandoned_checkout,
-- abandoned_checkout_line, "order". Shopify lists a checkout here once the buyer left contact
-- details; completed_at is set when it became an order (the order carries its checkout_token),
-- closed_at when the merchant archived it (expired). checkout_url is Shopify's recovery link.
SELECT ch.id AS checkout_id,
       ch.customer_id,
       ch.email,
       CASE WHEN ch.completed_at IS NOT NULL THEN 'completed'
            WHEN ch.closed_at IS NOT NULL THEN 'expired'
            ELSE 'open' END AS status,
       ch.abandoned_checkout_url AS checkout_url,
       ch.currency,
       ch.subtotal_price AS subtotal,
       ch.total_tax,
       ch.total_price AS total,
       (SELECT MIN(o.id) FROM "order" o WHERE o.checkout_token = ch.token) AS order_id,
       ch.created_at,
       ch.updated_at,
       COALESCE((SELECT ROUND(SUM(l.price * l.quantity), 2) FROM abandoned_checkout_line l
                  WHERE l.checkout_id = ch.id), 0) AS lines_subtotal
  FROM abandoned_checkout ch
 WHERE ch.updated_at >= :window_start
   AND ch.updated_at < :window_end
   AND COALESCE(ch._fivetran_deleted, FALSE) = FALSE
 ORDER BY ch.id
