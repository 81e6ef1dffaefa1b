-- WooCommerce: the erasure requests WordPress itself records (Tools > Erase Personal Data, or the
-- privacy request form): wp_posts rows of post_type 'user_request' whose post_name is the action
-- 'remove_personal_data' and whose post_title is the email (wp_create_user_request()). Only
-- requests the person confirmed from the link WordPress mailed them ('request-confirmed'), or that
-- an admin completed ('request-completed': WordPress's own erasers ran, the vendors' copies are
-- still there); a pending one is not proven to come from the address's owner. The customer id is
-- found from the email (the customers model), so it is left null here.
SELECT post_title            AS email,
       CAST(NULL AS INTEGER) AS customer_id,
       post_date_gmt         AS requested_at
  FROM wp_posts
 WHERE post_type = 'user_request'
   AND post_name = 'remove_personal_data'
   AND post_status IN ('request-confirmed', 'request-completed')
