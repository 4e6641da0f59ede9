import argparse
import dataclasses
import json

import pytest

from biobert.config import LoopConfig, add_config_args, build_config, config_from_args
from biobert.errors import UserError


@dataclasses.dataclass
class Demo(LoopConfig):
    name: str = "x"
    ratio: float = 0.5
    maybe: int | None = None


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_args(parser, Demo)
    return config_from_args(Demo, parser.parse_args(argv))


def test_precedence_default_file_cli(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"name": "from_file", "seed": 7, "ratio": 0.25}))
    cfg = parse(["--config", str(path), "--seed", "9", "--resume"])
    assert (cfg.name, cfg.seed, cfg.ratio, cfg.resume, cfg.log_every) == ("from_file", 9, 0.25, True, 10)


def test_bool_flag_values():
    assert parse(["--progress", "false"]).progress is False
    assert parse([]).progress is True


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seeed": 1}))
    with pytest.raises(UserError, match=r"unknown key\(s\) \['seeed'\].*Valid keys"):
        parse(["--config", str(path)])


def test_deepspeed_key_in_run_config_is_rejected_with_a_pointer():
    with pytest.raises(UserError, match="deepspeed_config"):
        build_config(Demo, {"train_batch_size": 32})


def test_type_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="`seed` expects int"):
        parse(["--seed", "abc"])
    assert parse(["--maybe", "3"]).maybe == 3
    assert build_config(Demo, {"maybe": None}).maybe is None


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "seed": 1,\n  oops\n}')
    with pytest.raises(UserError, match=r"bad.json:3:\d+: malformed JSON"):
        parse(["--config", str(path)])


def test_shipped_run_configs_load():
    from pathlib import Path

    from biobert.config import read_config_file
    from biobert.ds_config import load_ds_config
    from pretrain.pretrain_config import PretrainConfig

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "pretrain" / "configs").glob("*.json")):
        values, ds = read_config_file(path)
        build_config(PretrainConfig, values, file_source=str(path))
        for profile in ("v100x8", "a100x8", "h100x8", "cpu"):  # its DeepSpeed overrides fit every profile
            load_ds_config(root / "ds_configs" / f"{profile}.json", ds)
