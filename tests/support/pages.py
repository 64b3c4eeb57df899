"""What an admin page carries, read as its scripts read it."""

from __future__ import annotations

import json
import re


def chart_data(body: str) -> list[dict]:
    """The charts of a page, in order, as charts.js reads them: the JSON of each figure's <script>."""
    names = re.findall(r'<figure class="op-chart" data-chart="([^"]+)"', body)
    return [json.loads(re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', body, re.S)
                       .group(1)) for name in names]
