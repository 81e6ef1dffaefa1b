-- WooCommerce (HPOS): the whole status history (before :window_end) of a chunk of orders, built
-- exactly as order_changes.sql builds it (keep the two in step). Reads wp_wc_orders,
-- wp_wc_order_operational_data.
SELECT change_id, order_id, status, changed_at, seq FROM (
  SELECT h.change_id, h.order_id, h.status, h.changed_at,
         ROW_NUMBER() OVER (PARTITION BY h.order_id ORDER BY h.changed_at, h.rank_at_tie, h.change_id) AS seq
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
   WHERE h.order_id IN :order_ids
) c
WHERE changed_at < :window_end
ORDER BY order_id, seq
