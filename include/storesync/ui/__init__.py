"""The Storesync view in the Airflow UI: what the ledger knows, read for people.

``queries`` reads the ledger tables (deliveries, runs, watermarks, budgets, quarantine, LTV) with
indexed, time-bounded statements; ``charts`` draws them as inline SVG on the server; ``page``
renders the HTML; ``datadocs`` serves the GX Data Docs with their CDN links pointed at the
plugin's own copies; ``app`` is the FastAPI application the Airflow plugin (``plugins/``) mounts,
and checks every caller with Airflow's auth manager. Nothing here imports Airflow at module
level: the queries and the page are tested and benchmarked without it.
"""
