-- Storefront events of the data interval, from Segment's `tracks` table (a Snowplow `events`
-- table maps the same way: event_id, event_name, domain_userid, user_id, ...). Segment names the
-- events "Product Viewed" and "Product Added"; storesync sends `product_viewed` and
-- `added_to_cart` to Sendlane, each once (the event id is its identity).
SELECT t.id AS event_id,
       CASE t.event WHEN 'Product Viewed' THEN 'product_viewed'
                    WHEN 'Product Added' THEN 'added_to_cart' END AS event_name,
       t."timestamp" AS occurred_at,
       t.anonymous_id,
       t.user_id,
       t.context_traits_email AS email,
       t.product_id,
       t.sku,
       COALESCE(p.title, t.name) AS product_name,
       t.quantity,
       t.price,
       t.currency,
       COALESCE(p.url, t.url) AS product_url,
       p.image_url,
       t.cart_id
  FROM tracks t
  LEFT JOIN products p ON CAST(p.product_id AS VARCHAR(64)) = t.product_id
 WHERE t.event IN ('Product Viewed', 'Product Added')
   AND t."timestamp" >= :window_start
   AND t."timestamp" < :window_end
 ORDER BY t."timestamp", t.id
