from pathlib import Path

import numpy as np
import pytest

import multivec
from multivec.testing import DIM, SMALL_FDE, BackendConformance

pytest.importorskip("lancedb", reason="the lancedb extra is not installed")


class TestLanceDB(BackendConformance):
    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"lancedb://{tmp_path}"


def test_fde_index_is_trained_again_when_the_table_outgrows_it(tmp_path: Path) -> None:
    """Partitions follow the table's growth (about sqrt(n) / 2), so probes stay short."""
    col = multivec.connect(f"lancedb://{tmp_path}", "c", dim=DIM, fde=SMALL_FDE)
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(3, DIM)) for _ in range(1300)]
    table = col.backend._open()  # type: ignore[attr-defined]

    def index_names() -> list[str]:
        return [ix.name for ix in table.list_indices()]

    col.upsert(list(range(300)), docs[:300])
    col.optimize()
    assert index_names() == ["fde_ivf_9"]
    col.upsert(list(range(300, 600)), docs[300:600])
    col.optimize()  # 600 rows want 12 partitions: not yet twice 9, so the index is kept
    assert index_names() == ["fde_ivf_9"]
    col.upsert(list(range(600, 1300)), docs[600:])
    col.optimize()
    assert index_names() == ["fde_ivf_18"]
    hits = col.search(docs[1234].astype(np.float32), k=1, candidates=50)
    assert hits.ids == [1234]
