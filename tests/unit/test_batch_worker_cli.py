"""``python -m batch_worker``: bad arguments exit with status 2 and say why; backend loading rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_worker.__main__ import WorkerConfigError, load_worker_backend, main

URL = ["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch", "0", *URL], "--max-batch must be >= 1, got 0"),
        (["--max-wait-ms", "-1", *URL], "--max-wait-ms must be in [0, 60000), got -1.0"),
        (["--prefetch", "0", *URL], "--prefetch must be >= 1, got 0"),
        (["--backend", "gpu-magic", *URL], "invalid choice: 'gpu-magic'"),
        (["--amqp-url", "http://localhost"], "--amqp-url must start with amqp:// or amqps://"),
        (["--max-batch", "many", *URL], "invalid int value: 'many'"),
        ([], "--amqp-url is required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROUTING_AMQP_URL", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_named_backend_that_cannot_load_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--backend", "torch", "--checkpoint", str(tmp_path / "missing.pt"), *URL])
    assert code == 2
    assert "backend 'torch' cannot be loaded" in capsys.readouterr().err


def test_backend_none_and_auto_without_a_model_serve_the_plain_search(tmp_path: Path) -> None:
    assert load_worker_backend("none", tmp_path, tmp_path / "missing.pt") is None
    assert load_worker_backend("auto", tmp_path / "no-models", tmp_path / "missing.pt") is None
    with pytest.raises(WorkerConfigError, match="onnxruntime"):
        load_worker_backend("onnxruntime", tmp_path / "no-models", tmp_path / "missing.pt")
