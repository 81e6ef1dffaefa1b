"""Writes ../.env for docker-compose.yaml from example.env, with the required secrets generated.

    python3 docker/generate_env.py            # refuses to overwrite an existing .env
    python3 docker/generate_env.py --print    # to stdout instead

Standard library only (a Fernet key is 32 random bytes, URL-safe base64), so it runs before
anything is installed. The secrets are written to the file, never printed (unless --print).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = {
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "AIRFLOW_API_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
}


def render(example: str) -> str:
    """example.env with every empty required secret filled in."""
    def fill(match: re.Match) -> str:
        return f"{match.group(1)}={GENERATED[match.group(1)]()}"

    return re.sub(rf"^({'|'.join(GENERATED)})=$", fill, example, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="write to stdout, not ../.env")
    parser.add_argument("--output", default=str(HERE.parent / ".env"))
    args = parser.parse_args(argv)
    text = render((HERE / "example.env").read_text())
    if args.print:
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    if output.exists():
        print(f"{output} exists: edit it, or move it away to generate a new one (its secrets guard the "
              "metadata database's encrypted connections: keep the Fernet key)", file=sys.stderr)
        return 2
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    print(f"wrote {output} (mode 600): AIRFLOW_JWT_SECRET, AIRFLOW_API_SECRET_KEY, AIRFLOW_ADMIN_PASSWORD and "
          "AIRFLOW_FERNET_KEY generated; the admin password is in the file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
