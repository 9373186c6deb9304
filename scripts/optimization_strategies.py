#!/usr/bin/env python3
"""Bad-case report -> an optimized run config: `sidrec optimize` (the guide's optimization_strategies.py).

    python scripts/optimization_strategies.py --badcase_report ./analysis_output/C_T/badcase_report.json \\
        --output_config ./optimized_config.yaml [--auto_recommend] [--strategies long_tail,short_history]
        [--base_config configs/qwen2.5-0.5b.yaml]

--auto_recommend -> --auto (strategies picked by the documented rules); --strategies -> --strategy; with neither,
sidrec shows the report's patterns and asks which strategies to apply. --base_config (default
configs/qwen2.5-0.5b.yaml) is the config the strategies' overrides are merged into. The output is a full run config
(sections sft / rl / sid ...) with the reasons as comments; retrain with it:
    bash scripts/pipeline_0.5b.sh --config ./optimized_config.yaml --out ./outputs/optimized
    CONFIG=./optimized_config.yaml bash scripts/sft_single_gpu_swanlab.sh
An --output_config ending in .json (the guide's optimized_config.json) gets the same settings as JSON, and the
commented YAML beside it (same name, .yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import REPO, call_sidrec, exec_sidrec, note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--badcase_report", required=True, help="badcase_report.json from analyze_badcase.sh (or its folder)")
    p.add_argument("--output_config", required=True, help="the optimized config to write (.yaml, or .json)")
    p.add_argument("--auto_recommend", action="store_true", help="pick strategies by the documented rules")
    p.add_argument("--strategies", "--strategy", dest="strategies", action="append",
                   help="long_tail | cold_start | short_history | recency_bias | sid_quality | hyperparameter")
    p.add_argument("--base_config", default=str(REPO / "configs" / "qwen2.5-0.5b.yaml"),
                   help="run config to start from (default configs/qwen2.5-0.5b.yaml)")
    args = p.parse_args()

    out = Path(args.output_config)
    as_json = out.suffix.lower() == ".json"
    yaml_out = out.with_suffix(".yaml") if as_json else out
    cmd = ["optimize", "--report", args.badcase_report, "--out", str(yaml_out), "--base", args.base_config]
    if args.auto_recommend:
        cmd.append("--auto")
    for s in args.strategies or []:
        cmd += ["--strategy", s]
    if not as_json:
        exec_sidrec(cmd)
    rc = call_sidrec(cmd)
    if rc:
        sys.exit(rc)
    write_json_copy(yaml_out, out)


def write_json_copy(yaml_path: Path, json_path: Path) -> None:
    try:
        import yaml
    except ImportError:  # this Python has no PyYAML: convert with the environment sidrec runs in
        venv_python = REPO / ".venv" / "bin" / "python"
        if not venv_python.exists() or Path(sys.executable).resolve() == venv_python.resolve():
            sys.exit("PyYAML is needed to write JSON: pip install pyyaml, or give --output_config a .yaml name")
        os.execv(str(venv_python), [str(venv_python), "-c",
                                    "import json, sys, yaml; d = yaml.safe_load(open(sys.argv[1]));"
                                    "open(sys.argv[2], 'w').write(json.dumps(d, indent=2) + '\\n')",
                                    str(yaml_path), str(json_path)])
    data = yaml.safe_load(yaml_path.read_text())
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(json_path)
    note(f"wrote {json_path} (the same settings as {yaml_path}, which keeps the reasons as comments)")


if __name__ == "__main__":
    main()
