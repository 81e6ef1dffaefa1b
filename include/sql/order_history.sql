-- The whole status history of a chunk of orders (quarantined orders re-checked on later runs).
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
 WHERE h.order_id IN :order_ids
   AND h.changed_at < :window_end
 ORDER BY h.order_id, seq
