"""The one markdown-table formatter."""

import pytest

from lumos_megatron.markdown_table import markdown_table


def test_header_separator_and_cells():
    assert markdown_table(["a", "b"], [["x", 1], ["y", 0.5]]) == "| a | b |\n|---|---|\n| x | 1 |\n| y | 0.5 |"
    assert markdown_table(["v"], [[2.0], ["–"]], ".3f") == "| v |\n|---|\n| 2.000 |\n| – |"


def test_a_row_of_the_wrong_width_is_an_error():
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        markdown_table(["a"], [[1, 2]])
