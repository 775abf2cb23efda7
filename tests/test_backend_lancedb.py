from pathlib import Path

import pytest

from multivec.testing import BackendConformance

pytest.importorskip("lancedb", reason="the lancedb extra is not installed")


class TestLanceDB(BackendConformance):
    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"lancedb://{tmp_path}"
