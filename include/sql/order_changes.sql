-- Every order status change in the data interval, ordered within each order.
-- seq = the change's position in the order's whole history: seq 1 is the placement.
SELECT h.history_id AS change_id,
       h.order_id,
       h.status,
       h.changed_at,
       (SELECT COUNT(*)
          FROM order_status_history p
         WHERE p.order_id = h.order_id
           AND (p.changed_at < h.changed_at
                OR (p.changed_at = h.changed_at AND p.history_id <= h.history_id))) AS seq
  FROM order_status_history h
 WHERE h.changed_at >= :window_start
   AND h.changed_at < :window_end
 ORDER BY h.order_id, seq
