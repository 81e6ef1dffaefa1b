-- LTV: one row per order (see docs/ltv.md). status = the order's CURRENT status; updated_at must
-- move whenever the order or its status does (the daily job finds what changed through it).
-- Timestamps: datetime columns or ISO 8601 text, in UTC. No bind parameters.
SELECT order_id,
       customer_id,
       status,
       currency,
       total,
       created_at,
       updated_at
  FROM orders
