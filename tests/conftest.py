import pytest

from tests.helpers import GatewayProcess, Mosquitto


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "mosquitto").start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def no_gateway_outlives_its_test():
    yield
    for gw in list(GatewayProcess.running):
        gw.kill()
