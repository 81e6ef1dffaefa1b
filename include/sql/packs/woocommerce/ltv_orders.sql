-- WooCommerce (HPOS), LTV: one row per placed order (paid, or on hold). Reads wp_wc_orders,
-- wp_wc_order_operational_data. status is the status of the order's latest change in the history
-- ltv_order_status_changes.sql returns (so the two agree); total is total_amount (shipping and tax
-- included, partial refunds not deducted) in the order's currency. customer_id is the WordPress
-- user (0, a guest, is no customer: not counted). date_updated_gmt moves with every refund and
-- status change.
SELECT o.id AS order_id,
       NULLIF(o.customer_id, 0) AS customer_id,
       COALESCE(l.status, 'processing') AS status,
       o.currency,
       o.total_amount AS total,
       COALESCE(d.date_paid_gmt, o.date_created_gmt) AS created_at,
       o.date_updated_gmt AS updated_at
  FROM wp_wc_orders o
  JOIN wp_wc_order_operational_data d ON d.order_id = o.id
  LEFT JOIN (
    SELECT h.order_id, h.status,
           ROW_NUMBER() OVER (PARTITION BY h.order_id
                              ORDER BY h.changed_at DESC, h.rank_at_tie DESC, h.change_id DESC) AS latest
      FROM (
  -- The placement: seq 1, always, when the order was paid (or put on hold, as a bank transfer is).
  SELECT CAST(o.id AS VARCHAR(40)) || ':placed' AS change_id, o.id AS order_id, 'processing' AS status,
         COALESCE(d.date_paid_gmt, o.date_created_gmt) AS changed_at, 0 AS rank_at_tie
    FROM wp_wc_orders o JOIN wp_wc_order_operational_data d ON d.order_id = o.id
   WHERE o.type = 'shop_order' AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed', 'wc-refunded'))
  UNION ALL
  -- Completion (WooCommerce's word for shipped).
  SELECT CAST(o.id AS VARCHAR(40)) || ':completed', o.id, 'completed', d.date_completed_gmt, 1
    FROM wp_wc_orders o JOIN wp_wc_order_operational_data d ON d.order_id = o.id
   WHERE o.type = 'shop_order' AND d.date_completed_gmt IS NOT NULL AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed', 'wc-refunded'))
  UNION ALL
  -- Each refund (a shop_order_refund row). Only the last refund of an order WooCommerce marked
  -- wc-refunded is "refunded"; the others are partial: no vendor event, since a vendor return
  -- takes back every line of the order.
  SELECT 'refund:' || CAST(r.id AS VARCHAR(40)), o.id,
         CASE WHEN o.status = 'wc-refunded'
                   AND NOT EXISTS (SELECT 1 FROM wp_wc_orders l
                                    WHERE l.type = 'shop_order_refund' AND l.parent_order_id = r.parent_order_id
                                      AND (l.date_created_gmt > r.date_created_gmt
                                           OR (l.date_created_gmt = r.date_created_gmt AND l.id > r.id)))
              THEN 'refunded' ELSE 'partially_refunded' END,
         r.date_created_gmt, 2
    FROM wp_wc_orders r
    JOIN wp_wc_orders o ON o.id = r.parent_order_id
    JOIN wp_wc_order_operational_data d ON d.order_id = o.id
   WHERE r.type = 'shop_order_refund' AND o.type = 'shop_order' AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed', 'wc-refunded'))
  UNION ALL
  -- The cancellation of a placed order, at its last update (HPOS keeps no time of the status change).
  SELECT CAST(o.id AS VARCHAR(40)) || ':cancelled', o.id, 'cancelled', o.date_updated_gmt, 3
    FROM wp_wc_orders o JOIN wp_wc_order_operational_data d ON d.order_id = o.id
   WHERE o.type = 'shop_order' AND o.status = 'wc-cancelled' AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed', 'wc-refunded'))
      ) h
  ) l ON l.order_id = o.id AND l.latest = 1
 WHERE o.type = 'shop_order' AND (d.date_paid_gmt IS NOT NULL OR o.status IN ('wc-processing', 'wc-on-hold', 'wc-completed', 'wc-refunded'))
