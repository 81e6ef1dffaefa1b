-- Shopify (Fivetran): every order status change in the data interval. Reads "order", fulfillment,
-- refund. Shopify keeps no status history; it is rebuilt from what the connector loads:
-- the placement (seq 1, at order.created_at), each successful fulfillment (fulfilled), each refund
-- (refunded when it is the last refund of an order whose financial_status is 'refunded', else
-- partially_refunded, which no vendor hears of) and the cancellation (order.cancelled_at).
-- change_id is stable across runs ('1001:placed', 'fulfillment:5001', 'refund:7004', '1003:cancelled').
-- seq ranks each change in its order's whole history, so only orders with a change in the window
-- are ranked. Test orders and rows Fivetran marks deleted are left out.
SELECT change_id, order_id, status, changed_at, seq FROM (
  SELECT h.change_id, h.order_id, h.status, h.changed_at,
         ROW_NUMBER() OVER (PARTITION BY h.order_id ORDER BY h.changed_at, h.rank_at_tie, h.change_id) AS seq
    FROM (
  -- The placement: seq 1, always (rank 0 wins a tie with a change at the same instant).
  SELECT CAST(o.id AS VARCHAR(40)) || ':placed' AS change_id, o.id AS order_id, 'processing' AS status,
         o.created_at AS changed_at, 0 AS rank_at_tie
    FROM "order" o
   WHERE COALESCE(o.test, FALSE) = FALSE AND COALESCE(o._fivetran_deleted, FALSE) = FALSE
  UNION ALL
  -- Each successful fulfilment (a cancelled or failed one is no shipment).
  SELECT 'fulfillment:' || CAST(f.id AS VARCHAR(40)), f.order_id, 'fulfilled', f.created_at, 1
    FROM fulfillment f JOIN "order" o ON o.id = f.order_id
   WHERE f.status = 'success' AND COALESCE(o.test, FALSE) = FALSE AND COALESCE(o._fivetran_deleted, FALSE) = FALSE
  UNION ALL
  -- Each refund. Only the last refund of an order Shopify calls refunded (and not cancelled: its
  -- cancellation is the return) is "refunded"; the others are partial: no vendor event, since a
  -- vendor return takes back every line of the order.
  SELECT 'refund:' || CAST(r.id AS VARCHAR(40)), r.order_id,
         CASE WHEN o.financial_status = 'refunded' AND o.cancelled_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM refund l
                                    WHERE l.order_id = r.order_id
                                      AND (l.created_at > r.created_at OR (l.created_at = r.created_at AND l.id > r.id)))
              THEN 'refunded' ELSE 'partially_refunded' END,
         r.created_at, 2
    FROM refund r JOIN "order" o ON o.id = r.order_id
   WHERE COALESCE(o.test, FALSE) = FALSE AND COALESCE(o._fivetran_deleted, FALSE) = FALSE
  UNION ALL
  -- The cancellation.
  SELECT CAST(o.id AS VARCHAR(40)) || ':cancelled', o.id, 'cancelled', o.cancelled_at, 3
    FROM "order" o
   WHERE o.cancelled_at IS NOT NULL AND COALESCE(o.test, FALSE) = FALSE AND COALESCE(o._fivetran_deleted, FALSE) = FALSE
    ) h
   WHERE h.order_id IN (SELECT o.id FROM "order" o
                         WHERE (o.created_at >= :window_start AND o.created_at < :window_end)
                            OR (o.cancelled_at >= :window_start AND o.cancelled_at < :window_end)
                        UNION ALL SELECT f.order_id FROM fulfillment f
                         WHERE f.created_at >= :window_start AND f.created_at < :window_end
                        UNION ALL SELECT r.order_id FROM refund r
                         WHERE r.created_at >= :window_start AND r.created_at < :window_end)
) c
WHERE changed_at >= :window_start AND changed_at < :window_end
ORDER BY order_id, seq
