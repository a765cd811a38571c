"""Column views without a daemon: indexing, lengths, the 2-D view."""

import numpy as np
import pytest

from stoker import Column


def column(parts):
    values = np.frombuffer(b"".join(parts), dtype=np.uint8)
    offsets = np.cumsum([0] + [len(p) for p in parts]).astype("<u8")
    return Column("f", values, offsets)


def test_a_column_indexes_samples_and_names_bad_indices():
    col = column([b"ab", b"", b"cde"])
    assert len(col) == 3
    assert [col[i].tobytes() for i in range(3)] == [b"ab", b"", b"cde"]
    assert col[-1].tobytes() == b"cde"
    assert col.to_list() == [b"ab", b"", b"cde"]
    assert col.lengths().tolist() == [2, 0, 3]
    with pytest.raises(IndexError, match="sample 3 of a column of 3"):
        col[3]


def test_as_array_is_2d_only_when_lengths_agree():
    assert column([b"ab", b"cd"]).as_array().tolist() == [[97, 98], [99, 100]]
    with pytest.raises(ValueError, match="different lengths"):
        column([b"ab", b"c"]).as_array()
    assert column([]).as_array().shape == (0, 0)
