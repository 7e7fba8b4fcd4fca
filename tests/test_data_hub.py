"""Hub-backed data fail fast without a network: one line, no client retries (no network used)."""

from __future__ import annotations

import socket
import time

import pytest

from llnbench.data import documents, glue, hub, tokenizer
from llnbench.data.corpus_config import CorpusConfig
from llnbench.errors import DataError


@pytest.fixture
def online_flags_unset(monkeypatch):
    for name in hub.OFFLINE_FLAGS:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _no_network(monkeypatch):
    """The probe finds no network; the hub clients must not be called at all."""
    monkeypatch.setattr(hub, "reachable", lambda host, port, timeout=0: "Name or service not known")

    def client(*args, **kwargs):
        raise AssertionError("the hub client was called without a network")

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", client)
    monkeypatch.setattr(tokenizer.Tokenizer, "from_pretrained", client)


@pytest.mark.parametrize(
    ("load", "named", "way_out", "flag"),
    [
        pytest.param(lambda: glue.load_hub(glue.TASKS["sst2"]), "GLUE task sst2",
                     "task=sst2_rt", "HF_DATASETS_OFFLINE", id="glue"),
        pytest.param(lambda: documents.read_wikitext(CorpusConfig(source="wikitext103")),
                     "wikitext-103-raw-v1", "data=embedded", "HF_DATASETS_OFFLINE", id="wikitext"),
        pytest.param(lambda: tokenizer.load_tokenizer("FacebookAI/roberta-base"),
                     "FacebookAI/roberta-base", "data.tokenizer=embedded", "HF_HUB_OFFLINE",
                     id="tokenizer"),
    ],
)  # fmt: skip
def test_without_a_network_the_hub_is_not_asked(
    online_flags_unset, monkeypatch, load, named, way_out, flag
):
    _no_network(monkeypatch)
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message
    assert named in message and "needs the network" in message and "huggingface.co:443" in message
    assert way_out in message and f"{flag}=1" in message


def test_offline_flags_leave_the_call_to_the_client(monkeypatch):
    """HF_DATASETS_OFFLINE=1: no probe; the client reads its cache (here: a miss, one line)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub, "reachable", lambda *a, **k: pytest.fail("probed while offline"))
    import datasets

    def offline_miss(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline_miss)
    with pytest.raises(DataError, match=r"offline \(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1\)"):
        glue.load_hub(glue.TASKS["sst2"])


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_flag_values(monkeypatch, value):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline_flag() == "HF_HUB_OFFLINE"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.offline_flag() is None


def test_probe_goes_to_the_proxy_or_the_endpoint(online_flags_unset, monkeypatch):
    assert hub.hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local:8000")
    assert hub.hub_address() == ("mirror.local", 8000)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    assert hub.hub_address() == ("proxy.local", 3128)


def test_probe_is_bounded_and_local(monkeypatch):
    # a refused local port: an answer at once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    assert hub.reachable("127.0.0.1", port, timeout=2) is not None

    # a lookup that hangs: the probe gives up after its timeout
    def hanging(*args, **kwargs):  # then refused, as a lookup that finally fails would be
        time.sleep(5)
        raise OSError("lookup gave up")

    monkeypatch.setattr(socket, "create_connection", hanging)
    start = time.perf_counter()
    assert hub.reachable("example.invalid", 443, timeout=0.2) == "no answer in 0.2 s"
    assert time.perf_counter() - start < 1.0
