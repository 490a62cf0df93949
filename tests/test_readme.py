"""The README's quick start and its shop test run as written.

The quick start becomes ``shop/__init__.py`` of a throwaway package, beside the two
functions it imports from the shop's own code (``shop/orders.py``) and the template it
renders; the README's test runs against it in a fresh interpreter, under pytest.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the quick start calls "your code": an order store with one paid order.
SHOP_ORDERS = """
from decimal import Decimal

from flask_neuroon import Order, OrderLine

ORDERS = {
    "ORD-1": Order(
        id="ORD-1",
        total=Decimal("64.97"),
        currency="EUR",
        lines=[
            OrderLine(product_id="SKU-RED", quantity=2, unit_price=Decimal("19.99")),
            OrderLine(product_id="SKU-BLUE", quantity=1, unit_price=Decimal("24.99")),
        ],
    )
}


def find_paid_order(order_id):
    return ORDERS.get(order_id)


def gateway_url_for(order_id):
    return f"https://gateway.example/pay/{order_id}"
"""


def _python_block(readme: str, containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"one README python block with {containing!r}, found {len(found)}"
    return str(found[0])


def test_the_quick_start_and_the_readme_shop_test_run_as_written(tmp_path: Path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shop = tmp_path / "shop"
    (shop / "templates").mkdir(parents=True)
    (shop / "__init__.py").write_text(_python_block(readme, "def create_app("), "utf-8")
    (shop / "orders.py").write_text(textwrap.dedent(SHOP_ORDERS), "utf-8")
    (shop / "templates" / "thanks.html").write_text("Thank you!", "utf-8")
    test_file = tmp_path / "test_shop.py"
    test_file.write_text(_python_block(readme, "def test_checkout_is_attributed"), "utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
