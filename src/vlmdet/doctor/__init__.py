"""``vlmdet doctor``: the checks that catch what breaks VLM fine-tuning, before a long run does."""

from vlmdet.doctor.checks import CheckResult, run_doctor

__all__ = ["CheckResult", "run_doctor"]
