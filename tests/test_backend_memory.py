import uuid

import pytest

from multivec.testing import BackendConformance


class TestMemory(BackendConformance):
    @pytest.fixture
    def uri(self) -> str:
        return f"memory://{uuid.uuid4().hex}"
