-- People who asked to be erased (GDPR Art. 17, CCPA): one row per request, an email, a customer
-- id or both. storesync erases each at Sailthru and Sendlane and in its own tables, and records it
-- in storesync_erasures (a salted hash, never the email); a request already erased is skipped.
-- The demo store has no such table: point this at yours (a support tool's export, a form's table).
SELECT CAST(NULL AS VARCHAR(320)) AS email,
       CAST(NULL AS INTEGER)      AS customer_id,
       CAST(NULL AS TIMESTAMP)    AS requested_at
 WHERE 1 = 0
