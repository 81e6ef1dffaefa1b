"""The GX Data Docs, served by the plugin so that they render with no network.

GX 1.24's page templates load jQuery, Bootstrap, bootstrap-table, Popper, Font Awesome, Vega and
more from five CDNs, and the logo from S3: offline, the index renders blank (bootstrap-table never
runs). :func:`rewrite_offline` points every such link at the plugin's vendored copy
(``plugins/storesync_ui/static/vendor``, see its README), drops the Subresource Integrity
attributes of those tags (the copy is served by us, same origin) and points the logo at the
site's own ``static/images``. Links a reader clicks (``<a href="https://...">``) are left alone.

The site comes from :func:`storesync.quality.docs.render_data_docs`: ``site_dir`` when its
``index.html`` exists, else it is built once from the stored validation results
(``results_dir``), if there are any.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

# CDN URL prefix -> path under the plugin's static/vendor/ folder.
CDN_ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/": "bootstrap-table-1.19.1/",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/": "bootstrap-table-1.19.1/",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/": "bootstrap-datepicker-1.9.0/",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "fontawesome-free-6.6.0/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/":
        "bootstrap-dark-1.1.0/css/",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"

# src/href attribute values of <script>, <link> and <img> tags.
_TAG = re.compile(r"<(script|link|img)\b[^>]*>", re.IGNORECASE)
_URL_ATTR = re.compile(r"""\b(src|href)=(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_SRI_ATTR = re.compile(r"""\s(integrity|crossorigin)(=(["'])[^"']*\3)?""", re.IGNORECASE)


class ExternalAsset(ValueError):
    """A page of the site loads something from the network that has no vendored copy."""


def rewrite_offline(html: str, *, vendor_url: str, site_root: str) -> str:
    """``html`` with its CDN scripts, styles and images served locally (see the module docstring).

    ``vendor_url``: where the vendored copies are served (``/storesync/static/vendor/``);
    ``site_root``: the site's root as seen from this page (``../../`` for a nested page).
    Raises :class:`ExternalAsset` for a script, style sheet or image on a host not in the map,
    so a new GX template that adds one fails loudly instead of rendering blank offline."""

    def local(url: str) -> str:
        if url.startswith(GX_IMAGES):
            return site_root + "static/images/" + url[len(GX_IMAGES):].split("?", 1)[0]
        for prefix, path in CDN_ASSETS.items():
            if url == prefix or (prefix.endswith("/") and url.startswith(prefix)):
                return vendor_url + path + url[len(prefix):]
        raise ExternalAsset(f"no vendored copy of {url}")

    def fix_tag(match: re.Match) -> str:
        tag = match.group(0)
        if match.group(1).lower() == "link" and "stylesheet" not in tag.lower() and "icon" not in tag.lower():
            return tag  # <link rel="canonical"> and friends load nothing
        rewritten = _URL_ATTR.sub(lambda m: f"{m.group(1)}={m.group(2)}{local(m.group(3))}{m.group(2)}", tag)
        return _SRI_ATTR.sub("", rewritten) if rewritten != tag else tag

    return _TAG.sub(fix_tag, html)


def site_root_for(relative_path: str) -> str:
    """``../`` once per folder of a page's path inside the site (``validations/a/b.html`` -> ``../../``)."""
    return "../" * relative_path.count("/")


class DataDocsSite:
    """Finds (or builds once) the site, and resolves a request path to a file inside it."""

    def __init__(self, site_dir: str | Path, results_dir: str | Path | None = None) -> None:
        self.site_dir = Path(site_dir)
        self.results_dir = Path(results_dir) if results_dir else None
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Whether the site exists; builds it from the stored results when it does not."""
        index = self.site_dir / "index.html"
        if index.is_file():
            return True
        if self.results_dir is None or not any(self.results_dir.rglob("*.json")):
            return False
        with self._lock:
            if not index.is_file():
                from storesync.quality.docs import render_data_docs

                render_data_docs(self.results_dir, self.site_dir)
        return index.is_file()

    def file(self, relative_path: str) -> Path | None:
        """The file for ``relative_path`` inside the site, or None (missing, or outside it)."""
        root = self.site_dir.resolve()
        candidate = (root / (relative_path or "index.html")).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
        return candidate
