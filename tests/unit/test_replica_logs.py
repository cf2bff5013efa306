"""Serve's buffering log handler survives a logging reconfiguration like vLLM's (no Ray, no engine)."""

from __future__ import annotations

import logging
import logging.config
import logging.handlers

from serve_app.replica.logs import keep_log_targets


def _vllm_like_dict_config() -> None:
    """What vLLM 0.32 does when it makes an engine: a non-incremental dictConfig (closes every handler)."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"vllm": {"class": "logging.StreamHandler"}},
            "loggers": {"vllm-test": {"handlers": ["vllm"], "level": "INFO", "propagate": False}},
        }
    )


def test_a_closed_buffering_handler_gets_its_target_back_and_writes(tmp_path):
    log = logging.getLogger("serve-app-test.replica")
    log.propagate = False
    target = logging.FileHandler(tmp_path / "replica.log")
    buffered = logging.handlers.MemoryHandler(capacity=2, target=target)
    log.addHandler(buffered)
    try:
        _vllm_like_dict_config()
        assert buffered.target is None  # the upstream behaviour this works around
        buffered.setTarget(target)

        with keep_log_targets():
            _vllm_like_dict_config()
        assert buffered.target is target
        for i in range(5):
            log.warning("request %d done", i)
        # Flushed at capacity, so nothing piles up in memory, and it reached the file.
        assert len(buffered.buffer) < 2
        assert "request 3 done" in (tmp_path / "replica.log").read_text()
    finally:
        log.removeHandler(buffered)
        target.close()
