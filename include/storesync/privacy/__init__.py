"""Personal data: retention (``retention.scrub_expired``) and erasure (``erasure.erase``), with
the erased people's salted hashes that keep every later sync from planning for them
(``subjects``). docs/privacy.md says what storesync stores, for how long, and how to erase."""
