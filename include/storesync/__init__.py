"""storesync: keeps email-marketing vendors in step with a store's data warehouse.

The sync core (everything outside ``storesync.provider``) never imports Airflow, so it can be
tested, benchmarked and run from the command line without a scheduler.
"""

__version__ = "0.1.0"
