"""Imports a package from the trainer's own requirements and reports where it was found."""

import termcolor  # only in this trainer's virtualenv, never in the platform's environment

from sdk import TrainerSDK, run_main


def main(sdk: TrainerSDK) -> int:
    sdk.report_started("training")
    sdk.log("INFO", f"imported termcolor from {termcolor.__file__}")
    sdk.report_completed({"ok": 1}, artifacts={"module_file": termcolor.__file__})
    return 0


if __name__ == "__main__":
    run_main(main)
