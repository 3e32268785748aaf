"""``switchboard drift baseline reset`` refuses an empty model name as a usage error (it said
"no baseline stored for ;" and exit 0), before touching any database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.mark.parametrize("model", ["", "   "])
def test_an_empty_model_name_is_a_usage_error(model: str) -> None:
    from app.cli import main

    result = CliRunner().invoke(main, ["drift", "baseline", "reset", model, "--database-url",
                                       "postgresql://postgres@127.0.0.1:1/nowhere"])
    assert result.exit_code == 2, result.output
    assert "a public model's name is not empty" in result.output
