-- LTV: one row per order status change, so a past day is computed with the statuses it had.
-- history_id (optional) breaks ties between changes at the same instant: the larger is later.
-- A store without a status history sets ltv.status_history_model = "" in storesync.toml.
SELECT history_id,
       order_id,
       status,
       changed_at
  FROM order_status_history
