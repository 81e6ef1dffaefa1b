-- WooCommerce (HPOS): every order status change in the data interval. Reads wp_wc_orders (orders
-- and their shop_order_refund rows) and wp_wc_order_operational_data. HPOS keeps no status
-- history (order notes are free text), so it is rebuilt: the placement (seq 1, at date_paid_gmt,
-- or date_created_gmt for an order on hold), the completion (date_completed_gmt), each refund
-- (refunded when it is the last of an order marked wc-refunded, else partially_refunded: no
-- event) and the cancellation (at date_updated_gmt). An order never paid (wc-pending, wc-failed,
-- an unpaid order cancelled by the stock-hold timeout) and block-checkout drafts are no purchase:
-- none of their changes are read. change_id is stable ('2001:placed', '2001:completed',
-- 'refund:3004', '2003:cancelled'): a change found again in a later window is not sent twice.
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
   WHERE h.order_id IN (SELECT o.id FROM wp_wc_orders o
                         WHERE o.type = 'shop_order'
                           AND o.date_updated_gmt >= :window_start AND o.date_updated_gmt < :window_end
                        UNION ALL SELECT d.order_id FROM wp_wc_order_operational_data d
                         WHERE (d.date_paid_gmt >= :window_start AND d.date_paid_gmt < :window_end)
                            OR (d.date_completed_gmt >= :window_start AND d.date_completed_gmt < :window_end)
                        UNION ALL SELECT o.id FROM wp_wc_orders o
                         WHERE o.date_created_gmt >= :window_start AND o.date_created_gmt < :window_end
                        UNION ALL SELECT r.parent_order_id FROM wp_wc_orders r
                         WHERE r.type = 'shop_order_refund'
                           AND r.date_created_gmt >= :window_start AND r.date_created_gmt < :window_end)
) c
WHERE changed_at >= :window_start AND changed_at < :window_end
ORDER BY order_id, seq
