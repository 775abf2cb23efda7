import uuid

import numpy as np
import pytest

import multivec
from multivec.errors import InvalidInputError
from multivec.testing import DIM, SMALL_FDE, BackendConformance


class TestMemory(BackendConformance):
    @pytest.fixture
    def uri(self) -> str:
        return f"memory://{uuid.uuid4().hex}"


def test_a_document_over_the_backends_token_limit_writes_nothing() -> None:
    """``Backend.max_tokens`` (Milvus ``native=maxsim``) is checked before the first request."""
    col = multivec.connect(f"memory://{uuid.uuid4().hex}", "c", dim=DIM, fde=SMALL_FDE)
    col.backend.max_tokens = 4
    with pytest.raises(InvalidInputError, match=r"'long' has 5 tokens, over the 4 .*nothing"):
        col.upsert(["ok", "long"], [np.ones((4, DIM)), np.ones((5, DIM))])
    assert col.count() == 0
