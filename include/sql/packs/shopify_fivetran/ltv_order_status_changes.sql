-- Shopify (Fivetran), LTV: every order status change, the history order_changes.sql builds (placement
-- 'processing', 'fulfilled', 'partially_refunded', 'refunded', 'cancelled'); storesync.toml's [ltv]
-- classes name these statuses (README). rank_at_tie breaks ties at one instant: the larger is later.
SELECT h.order_id, h.status, h.changed_at, h.rank_at_tie AS history_id
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
