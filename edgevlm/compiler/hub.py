"""Qualcomm AI Hub: compile and profile each stage on a real device.

``edgevlm compile --target sa8295p --hub`` uploads each stage's quantized
ONNX (QDQ) artifact, compiles it for the target's device ("SA8295P ADP") to a
QNN context binary, profiles it there and merges the measured latency into
report.json, marked "measured on device (Qualcomm AI Hub)".

Hub access is optional: without credentials (``~/.qai_hub/client.ini``, the
file named by ``QAIHUB_CLIENT_INI``, or ``QAI_HUB_API_TOKEN``), without the
``qai-hub`` package, or on a network failure, :func:`run_hub` prints one line
and returns; the local build is unaffected.
"""
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgevlm.errors import InputError

INSTALL = "pip install 'edgevlm[hub]'"
MEASURED = "measured on device (Qualcomm AI Hub)"
# edgevlm target -> AI Hub device name.
HUB_DEVICES = {"sa8295p": "SA8295P ADP", "snapdragon-8-gen3": "Samsung Galaxy S24 (Family)"}
RUNTIMES = ("qnn_context_binary", "precompiled_qnn_onnx")
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class HubJobSpec:
    """One stage's compile + profile request (no network involved in building it)."""

    stage: str
    model_path: str  # absolute path of the ONNX file to upload
    device: str
    compile_options: str
    profile_options: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _config_path() -> Path:
    return Path(os.path.expanduser(os.environ.get("QAIHUB_CLIENT_INI", "~/.qai_hub/client.ini")))


def hub_available() -> tuple[bool, str]:
    """(True, "") when qai-hub is installed and credentials exist; never touches the network."""
    try:
        import qai_hub  # noqa: F401
    except ImportError:
        return False, f"qai-hub not installed: {INSTALL}"
    if os.environ.get("QAI_HUB_API_TOKEN") or _config_path().is_file():
        return True, ""
    return False, (f"no Qualcomm AI Hub credentials ({_config_path()} or QAI_HUB_API_TOKEN): "
                   "run `qai-hub configure --api_token <token>`")


def build_hub_jobs(build_dir, report: dict, target, runtime: str = "qnn_context_binary") -> list[HubJobSpec]:
    """One job spec per stage that has a quantized ONNX artifact; pure (reads only the report).

    Stages without one are left out: the target's NPU runs integer graphs, and
    a float ONNX would be compiled to something the HTP v68 cannot run.
    """
    name = getattr(target, "name", target)
    if name not in HUB_DEVICES:
        raise InputError(f"no Qualcomm AI Hub device for target '{name}'",
                         f"use --hub with one of: {', '.join(HUB_DEVICES)}")
    if runtime not in RUNTIMES:
        raise InputError(f"unknown AI Hub target runtime '{runtime}'", f"use one of: {', '.join(RUNTIMES)}")
    jobs = []
    for stage in report["stages"]:
        onnx = [a for a in stage["artifacts"] if a["backend"] == "onnx" and a["path"].endswith(".onnx")]
        if not onnx or not _QDQ_OPS & set(onnx[0].get("info", {}).get("ops", [])):
            continue
        path = Path(build_dir) / onnx[0]["path"]
        if not path.is_file():
            raise InputError(f"stage {stage['name']}: ONNX artifact {path} is missing", "rebuild with `edgevlm compile`")
        jobs.append(HubJobSpec(stage["name"], str(path), HUB_DEVICES[name], f"--target_runtime {runtime}"))
    return jobs


def _client():
    import qai_hub

    token = os.environ.get("QAI_HUB_API_TOKEN")
    return qai_hub.Client(config=qai_hub.ClientConfig(api_token=token)) if token else qai_hub.Client()


def _measure(client, spec: HubJobSpec) -> dict:
    """Submit compile then profile for one stage and wait for the profile."""
    import qai_hub

    device = qai_hub.Device(spec.device)
    compile_job = client.submit_compile_job(model=spec.model_path, device=device, name=f"edgevlm-{spec.stage}",
                                            options=spec.compile_options)
    compiled = compile_job.get_target_model()
    if compiled is None:
        return {"status": "compile failed", "compile_job": compile_job.job_id,
                "reason": str(getattr(compile_job.get_status(), "message", "") or "see the job page")}
    # submit_inference_job(profile=True) is what submit_profile_job became in qai-hub 0.56.
    profile_job = client.submit_inference_job(model=compiled, device=device, inputs=None, name=f"edgevlm-{spec.stage}",
                                              options=spec.profile_options, profile=True)
    summary = (profile_job.download_profile() or {}).get("execution_summary", {})
    if not summary.get("estimated_inference_time"):
        return {"status": "profile failed", "compile_job": compile_job.job_id, "profile_job": profile_job.job_id}
    return {
        "status": "ok",
        "source": MEASURED,
        "device": spec.device,
        "latency_ms": summary["estimated_inference_time"] / 1000.0,  # AI Hub reports microseconds
        "peak_memory_bytes": summary.get("estimated_inference_peak_memory"),
        "compile_job": compile_job.job_id,
        "profile_job": profile_job.job_id,
        "options": spec.compile_options,
    }


def _say(console, text: str) -> None:
    """One console line, never wrapped, never read as rich markup."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def run_hub(build_dir, report: dict, target, console) -> dict:
    """Compile and profile every eligible stage on AI Hub; merge latencies into ``report``.

    Each measured stage gains ``report["stages"][i]["device_latency"]``, and
    ``report["hub"]`` records the outcome.  Returns that ``report["hub"]``
    dict.  Never raises for a missing service: one line on ``console`` (a
    rich Console) instead.
    """
    ok, why = hub_available()
    if not ok:
        _say(console, f"AI Hub: skipped ({why}); local build complete")
        report["hub"] = {"status": "skipped", "reason": why}
        return report["hub"]
    jobs = build_hub_jobs(build_dir, report, target)
    if not jobs:
        why = "no stage has a quantized ONNX artifact to compile for the device"
        _say(console, f"AI Hub: skipped ({why})")
        report["hub"] = {"status": "skipped", "reason": why}
        return report["hub"]
    by_name = {s["name"]: s for s in report["stages"]}
    results = {}
    try:
        client = _client()
        for spec in jobs:
            results[spec.stage] = result = _measure(client, spec)
            if result["status"] == "ok":
                by_name[spec.stage]["device_latency"] = result
    except Exception as exc:  # requests, API and auth errors: the local build must still complete
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _say(console, f"AI Hub: failed ({type(exc).__name__}: {reason}); local build complete")
        report["hub"] = {"status": "failed", "reason": f"{type(exc).__name__}: {reason}", "stages": results}
        return report["hub"]
    measured = [s for s, r in results.items() if r["status"] == "ok"]
    _say(console, f"AI Hub: {len(measured)}/{len(jobs)} stages {MEASURED} on {jobs[0].device}")
    report["hub"] = {"status": "ok" if len(measured) == len(jobs) else "partial", "device": jobs[0].device,
                     "stages": results}
    return report["hub"]
