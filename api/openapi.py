"""Write the API's OpenAPI document to ``docs/openapi.json`` (``python -m api.openapi``).

The committed copy lets readers and client generators see the API without running it;
tests/test_api_schema.py fails when it drifts from the app. The schema does not depend on the data,
so a throwaway collection in a temporary folder builds it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from api.app import create_app
from core import Collection, Settings

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory() as folder, \
            Collection.open(Settings(data_dir=Path(folder), model_pretrained="none")) as collection:
        DOCUMENT.write_text(render(create_app(collection).openapi()))
    print(f"Wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
