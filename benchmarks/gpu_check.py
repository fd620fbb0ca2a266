"""GPU check: every batched method on CUDA and on the CPU, same inputs, same seeds, same numbers.

For each batched explainer that is registered (kernel/permutation/exact SHAP, LIME, the gradient
methods, RISE, Sobol, and the interaction methods when a pack registers them) this script runs
``mlflow_xai.pipeline.run`` (the computing core of ``explain()``, which never touches MLflow)
twice on the same fixed-seed models and inputs: once with ``device="cpu"`` (the reference) and
once with ``device="cuda"``. It asserts that the two results agree within float tolerance,
and records per method the seconds of explainer work on each side, the speed-up, and the peak
memory (the CUDA allocator peak on the GPU, the process RSS on the CPU) as the pipeline measures
them for ``summary.json``.

Tolerance: float32 models, so the two sides differ by rounding only (TF32 is turned off for
matmul and cuDNN convolutions unless ``--tf32``). A method matches when, for every array it
returns (values, base values, standard errors, interactions), ``max |cuda - cpu| <= rtol *
max |cpu|`` with ``rtol = 1e-4`` (``--rtol``): an absolute tolerance of 1e-4 of the
attribution scale (float32 against float64 models differ by at most 5e-6 of it, measured on
these inputs). The table reports the largest absolute difference and that ratio per method.

Exit codes: 0 every method matched; 1 a method differed or failed (the list is printed);
2 CUDA is not available (``--allow-cpu`` then runs both sides on the CPU, to test the script).

The GPU machine has torch (CUDA), numpy, pandas, scikit-learn, pluggy and pyarrow, no network,
and neither mlflow nor mlflow-xai installed. ``--wheels DIR`` installs the few other packages
the explain() path needs (``CARRIED`` below; ``scripts/gpu_wheels.sh`` downloads them) into a
temporary folder, only those the machine lacks; the repository and ``plugins/`` are put on
``sys.path`` and, when mlflow-xai is not installed, a minimal ``.dist-info`` carrying the
project's entry points lets the plugin registry find the method packs as an installed package.

    bash scripts/gpu_wheels.sh                                  # here, once (needs PyPI)
    run tool: carry [".gpu_wheels"], command
      PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --wheels .gpu_wheels
    python benchmarks/gpu_check.py --render <files_at>/gpu_check.json   # here: RESULTS.md

Smoke run without a GPU: ``python benchmarks/gpu_check.py --allow-cpu --quick``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "RESULTS.md"
START_MARK, END_MARK = "<!-- gpu_check:start -->", "<!-- gpu_check:end -->"

#: What the explain() path (pipeline.run, no MLflow logging) needs beyond torch, numpy, pandas,
#: scikit-learn (scipy, joblib, threadpoolctl), pluggy and pyarrow: (import name, distribution,
#: why). scripts/gpu_wheels.sh downloads exactly these distributions.
CARRIED = [
    ("tqdm", "tqdm", "mlflow_xai.progress.progress_bar imports it on every run, bar on or off"),
    ("captum", "captum", "deeplift (captum.attr.DeepLift)"),
    ("matplotlib", "matplotlib", "captum.attr imports matplotlib.pyplot at import time"),
    ("contourpy", "contourpy", "matplotlib"),
    ("cycler", "cycler", "matplotlib"),
    ("fontTools", "fonttools", "matplotlib"),
    ("kiwisolver", "kiwisolver", "matplotlib"),
    ("PIL", "pillow", "matplotlib"),
    ("pyparsing", "pyparsing", "matplotlib"),
    ("packaging", "packaging", "matplotlib, captum"),
    # tree_interactions only (shap's TreeExplainer, on the CPU whatever the device): shap also
    # needs numba, llvmlite and cloudpickle, which are not carried (llvmlite alone is ~40 MB);
    # without them on the machine that method is reported as skipped.
    ("shap", "shap", "tree_interactions (with the machine's numba, llvmlite, cloudpickle)"),
    ("slicer", "slicer", "shap"),
]

#: The batched methods of the torch pack, in table order; any other explainer the torch pack
#: registers is checked too, and so are the interaction methods when registered.
BATCHED = ["kernel_shap", "permutation_shap", "exact_shap", "lime", "integrated_gradients",
           "saliency", "input_x_gradient", "smoothgrad", "smoothgrad_sq", "vargrad",
           "gradient_shap", "deeplift", "rise", "sobol"]
INTERACTIONS = ["shapley_interactions", "tree_interactions"]
BATCHED_PACK = "torch"
#: Packs with nothing to check here (checks are off, no selectors, permutation_importance is
#: global-only): not loaded, so that nothing they import can get in the way.
UNUSED_PACKS = ("checks", "select", "importance")

#: Parameters of the --quick run (applied only where the method has that parameter); the full
#: run keeps every method's defaults.
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "kernel_shap": {"n_samples": 256},
    "permutation_shap": {"n_samples": 256},
    "lime": {"n_samples": 300},
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 10},
    "smoothgrad_sq": {"n_samples": 10},
    "vargrad": {"n_samples": 10},
    "gradient_shap": {"n_samples": 10},
    "rise": {"n_samples": 200},
    "shapley_interactions": {"n_samples": 512},  # >= the 2 x 210 pair terms of d = 20
    "sobol": {"n_samples": 8, "grid_size": 4},
}
QUICK_FALLBACK = {"n_samples": 128, "n_steps": 16}

SIZES = {
    # rows explained, background rows, wide d, narrow d (methods limited in features), images
    "full": {"rows": 200, "background": 50, "d": 20, "d_narrow": 10, "images": 8,
             "image_background": 8, "image_size": 32},
    "quick": {"rows": 40, "background": 16, "d": 20, "d_narrow": 8, "images": 4,
              "image_background": 4, "image_size": 32},
}
SEED = 0


# --------------------------------------------------------------------------------------------
# Bootstrap: packages from carried wheels, the repository on sys.path, entry points.
# --------------------------------------------------------------------------------------------

def bootstrap(wheels: Path | None, site_dir: Path | None = None) -> dict[str, Any]:
    """Make mlflow_xai, its packs and the CARRIED packages importable; return what was done."""
    done: dict[str, Any] = {"installed": [], "present": [], "missing": [], "dist_info": None}
    for path in (ROOT / "plugins", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    missing = [(mod, dist) for mod, dist, _ in CARRIED if importlib.util.find_spec(mod) is None]
    done["present"] = [dist for mod, dist, _ in CARRIED if (mod, dist) not in missing]
    site = site_dir
    if missing and wheels is not None:
        site = site or _temporary_site()
        dists = [dist for _, dist in missing]
        _install_wheels(Path(wheels), dists, site)
        done["installed"] = dists
    if site is None and _distribution_version("mlflow-xai") is None:
        site = _temporary_site()
    if site is not None:
        if _distribution_version("mlflow-xai") is None:
            done["dist_info"] = str(_write_dist_info(site))
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
    done["missing"] = [dist for mod, dist, _ in CARRIED if importlib.util.find_spec(mod) is None]
    return done


def _temporary_site() -> Path:
    """A folder for the installed wheels and the dist-info, removed when the process ends."""
    import atexit
    import shutil

    site = Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    return site


def _distribution_version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _install_wheels(wheels: Path, dists: list[str], target: Path) -> None:
    """pip install --no-index from the wheel folder into ``target``; without pip, unzip the
    wheels that match this interpreter (they are plain zip files)."""
    if not wheels.is_dir():
        raise SystemExit(f"gpu_check: --wheels {wheels}: no such folder. Run "
                         "`bash scripts/gpu_wheels.sh` first and carry the folder.")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--upgrade",
           "--target", str(target), "--find-links", str(wheels), *dists]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    print(f"gpu_check: pip could not install {dists} ({proc.stderr.strip()[-400:]}); "
          "unpacking the wheels directly", file=sys.stderr)
    import zipfile

    for dist in dists:
        wheel = _matching_wheel(wheels, dist)
        if wheel is None:
            raise SystemExit(f"gpu_check: no wheel of {dist} for Python "
                             f"{sys.version_info[0]}.{sys.version_info[1]} "
                             f"({platform.machine()}) in {wheels}; rerun scripts/gpu_wheels.sh")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)


def _matching_wheel(wheels: Path, dist: str) -> Path | None:
    norm = re.sub(r"[-_.]+", "_", dist).lower()
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    for wheel in sorted(wheels.glob("*.whl")):
        parts = wheel.name[:-4].split("-")
        if len(parts) < 5 or re.sub(r"[-_.]+", "_", parts[0]).lower() != norm:
            continue
        py, plat = parts[-3], parts[-1]
        if not (cp in py.split(".") or any(p.startswith("py3") for p in py.split("."))):
            continue
        if plat == "any" or (platform.machine() in plat and "linux" in plat):
            return wheel
    return None


def _write_dist_info(site: Path) -> Path:
    """A minimal mlflow_xai-<version>.dist-info with the project's entry points, so that the
    registry finds the packs through the ``mlflow_xai`` group as for an installed package."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib

        project = tomllib.loads(text)["project"]
        version = project["version"]
        groups = project.get("entry-points", {})
    except ImportError:  # Python 3.10: read the one section we need
        version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)
        section = re.search(r"^\[project\.entry-points\.mlflow_xai\]\n(.*?)(?:^\[|\Z)", text,
                            re.MULTILINE | re.DOTALL).group(1)
        pairs = re.findall(r'^(\w+)\s*=\s*"([^"]+)"', section, re.MULTILINE)
        groups = {"mlflow_xai": dict(pairs)}
    info = site / f"mlflow_xai-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mlflow-xai\n"
                                   f"Version: {version}\n")
    lines = []
    for group in ("mlflow_xai",):  # the packs; the CLI and MLflow's evaluator are not needed
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in groups.get(group, {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


# --------------------------------------------------------------------------------------------
# Inputs: fixed-seed models and data
# --------------------------------------------------------------------------------------------

def make_inputs(size: dict[str, int]) -> dict[str, Any]:
    import numpy as np
    import torch

    rng = np.random.default_rng(SEED)
    d, dn = size["d"], size["d_narrow"]
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    n_tab = size["rows"] + size["background"]
    X = (rng.normal(size=(n_tab, d)) @ (np.eye(d) + 0.5 * mix)).astype(np.float32)
    s, c = size["image_size"], 3
    n_img = size["images"] + size["image_background"]
    yy, xx = np.meshgrid(np.linspace(-1, 1, s), np.linspace(-1, 1, s), indexing="ij")
    blobs = np.stack([np.exp(-((xx - a) ** 2 + (yy - b) ** 2) * 8)
                      for a, b in rng.uniform(-0.6, 0.6, size=(n_img, 2))])
    images = (rng.normal(scale=0.3, size=(n_img, c, s, s))
              + blobs[:, None] * rng.uniform(0.5, 1.5, size=(n_img, c, 1, 1))).astype(np.float32)

    def mlp(width: int) -> torch.nn.Module:
        torch.manual_seed(SEED)
        return torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, 1)).eval()

    torch.manual_seed(SEED)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(c, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * (s // 4) ** 2, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 10)).eval()
    rows = size["rows"]
    return {
        "tabular": {"model": mlp(d), "X": X[:rows], "background": X[rows:],
                    "describe": f"{rows} rows x {d} features (float32, correlated normal), "
                                f"{size['background']} background rows; MLP {d}-64-64-1 (ReLU)"},
        "tabular_narrow": {"model": mlp(dn), "X": X[:rows, :dn], "background": X[rows:, :dn],
                           "describe": f"the first {dn} features (methods limited in features)"
                                       f"; MLP {dn}-64-64-1"},
        "image": {"model": cnn, "X": images[:size["images"]],
                  "background": images[size["images"]:],
                  "describe": f"{size['images']} x {c} x {s} x {s} images, "
                              f"{size['image_background']} background images; CNN "
                              "conv8-pool-conv16-pool-32-10 (ReLU), each image's predicted class"},
        "_rng_note": f"numpy default_rng({SEED}), torch.manual_seed({SEED}), explain seed {SEED}",
    }


def tree_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A scikit-learn tree ensemble fitted to the MLP's outputs (for tree methods)."""
    import torch
    from sklearn.ensemble import GradientBoostingRegressor

    tab = inputs["tabular"]
    with torch.no_grad():
        y = tab["model"].cpu()(torch.as_tensor(tab["X"])).numpy()[:, 0]
    model = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=SEED)
    model.fit(tab["X"], y)
    return {"model": model, "X": tab["X"], "background": tab["background"],
            "describe": "GradientBoostingRegressor(50 trees, depth 3) fitted to the MLP's output"}


# --------------------------------------------------------------------------------------------
# Running one method on one device
# --------------------------------------------------------------------------------------------

def set_precision(tf32: bool) -> str:
    """Full float32 on CUDA (no TF32) unless asked: the check is about the methods' arithmetic,
    not the model's precision mode. Both flag sets are set, legacy first, so that they agree:
    torch >= 2.9 raises at a generic cuDNN TF32 query when the legacy ``allow_tf32`` and the
    new per-operator ``fp32_precision`` flags disagree. Returns what was set, for the report."""
    import warnings

    import torch

    mode = "tf32" if tf32 else "ieee"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy flags' deprecation notice
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            torch.backends.cuda.matmul.fp32_precision = mode
            torch.backends.cudnn.fp32_precision = mode
            torch.backends.cudnn.conv.fp32_precision = mode
            torch.backends.cudnn.rnn.fp32_precision = mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    except Exception as exc:  # noqa: BLE001 - report it; the comparison says what it did
        return f"TF32 flags could not be set ({type(exc).__name__}: {exc}); torch's defaults"
    return (("TF32 on" if tf32 else "TF32 off")
            + f" (cuBLAS matmul allow_tf32={state[0]}, cuDNN allow_tf32={state[1]}"
            + (f", fp32_precision='{mode}'" if hasattr(torch.backends.cuda.matmul,
                                                       "fp32_precision") else "") + ")")


def run_side(job: dict[str, Any], device: str) -> dict[str, Any]:
    """One pipeline run of one method on ``device``: arrays to compare and the costs."""
    import numpy as np

    from mlflow_xai.config import XaiConfig
    from mlflow_xai.pipeline import run

    data = job["data"]
    config = XaiConfig(explainers={job["method"]: dict(job["params"])}, checks=[],
                       background=data["background"], max_rows=len(data["X"]), device=device,
                       seed=SEED, progress=False, strict=True)
    t0 = time.perf_counter()
    expl = run(data["model"], data["X"], config)
    wall = time.perf_counter() - t0
    entry = expl.summary["methods"][job["method"]]
    arrays: dict[str, Any] = {}
    if entry.get("status") == "ok":
        name = job["method"]
        if name in expl.heatmaps:
            arrays["values"] = np.asarray(expl.heatmaps[name], dtype=np.float64)
        elif name in expl.attributions:
            arrays["values"] = expl.attributions[name].to_numpy(dtype=np.float64)
        if name in expl.base_values:
            arrays["base_values"] = expl.base_values[name].to_numpy(dtype=np.float64)
        if name in getattr(expl, "standard_errors", {}):
            arrays["standard_errors"] = expl.standard_errors[name].to_numpy(dtype=np.float64)
        interactions = getattr(expl, "interactions", None) or {}
        if name in interactions:
            arrays["interactions"] = np.asarray(interactions[name], dtype=np.float64)
        if expl.outputs is not None:  # the class each row was explained for
            arrays["explained_class"] = expl.outputs.to_numpy()
    return {"status": entry.get("status"), "reason": entry.get("reason"),
            "error": entry.get("error"), "arrays": arrays,
            "seconds": entry.get("seconds"), "wall_s": round(wall, 4),
            "peak_memory_mb": entry.get("peak_memory_mb"),
            "model_evals": entry.get("model_evals"), "batch_rows": entry.get("batch_rows")}


def compare(ref: dict[str, Any], dev: dict[str, Any], rtol: float) -> dict[str, Any]:
    """max |dev - ref| and its ratio to max |ref| for every array; matched when each ratio is
    at most ``rtol`` (and labels, shapes and NaN positions agree)."""
    import numpy as np

    out: dict[str, Any] = {"max_abs": 0.0, "max_rel": 0.0, "scale": None, "worst": None,
                           "arrays": {}, "problems": []}
    for key, a in ref.items():
        b = dev.get(key)
        if b is None:
            out["problems"].append(f"{key}: missing on the device side")
            continue
        if key == "explained_class":
            if not np.array_equal(a, b):
                out["problems"].append(f"explained class differs on "
                                       f"{int(np.sum(a != b))} row(s)")
            continue
        if a.shape != b.shape:
            out["problems"].append(f"{key}: shape {b.shape} vs {a.shape}")
            continue
        nan_a, nan_b = ~np.isfinite(a), ~np.isfinite(b)
        if not np.array_equal(nan_a, nan_b):
            out["problems"].append(f"{key}: non-finite values at different positions")
            continue
        if a.size == 0 or nan_a.all():
            continue
        diff = float(np.max(np.abs(np.where(nan_a, 0.0, a - b))))
        scale = float(np.max(np.abs(np.where(nan_a, 0.0, a))))
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        out["arrays"][key] = {"max_abs": diff, "max_rel": rel, "scale": scale}
        if key == "values":
            out["scale"] = scale
        if rel >= out["max_rel"]:  # the row shows the array furthest off, relative to scale
            out["max_abs"], out["max_rel"], out["worst"] = diff, rel, key
        if rel > rtol:
            # How many values are off tells one ReLU kink crossed by rounding (a few values)
            # from a different computation (most of them).
            off = int(np.sum(np.abs(np.where(nan_a, 0.0, a - b)) > rtol * scale))
            out["problems"].append(f"{key}: max |diff| {diff:.3g} = {rel:.3g} x max |value| "
                                   f"{scale:.3g} > rtol {rtol:g} ({off} of {a.size} values "
                                   "off)")
    if "values" not in ref:
        out["problems"].append("no values returned")
    out["matched"] = not out["problems"]
    return out


def perturb(arrays: dict[str, Any], level: float = 1e-2) -> None:
    """For the test only: noise of ``level`` x the attribution scale on the values."""
    import numpy as np

    values = arrays.get("values")
    if values is not None:
        noise = np.random.default_rng(1).standard_normal(values.shape)
        arrays["values"] = values + level * float(np.max(np.abs(values)) or 1.0) * noise


def warm_up(inputs: dict[str, Any], device: str) -> None:
    """CUDA context, cuBLAS/cuDNN handles and kernels once before anything is timed."""
    import torch

    if not device.startswith("cuda"):
        return
    for kind in ("tabular", "tabular_narrow", "image"):
        model = inputs[kind]["model"].to(device)
        x = torch.as_tensor(inputs[kind]["X"], device=device).requires_grad_(True)
        model(x).sum().backward()
        model.cpu()
    torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------
# Which methods, on which data
# --------------------------------------------------------------------------------------------

def load_registered() -> tuple[list[dict[str, Any]], str | None]:
    """Every registered explainer with its raw ``requires``. A pack whose registration hook
    raises takes the whole registry down; then the packs other than the batched one are
    disabled and the registry is loaded again (the note says so)."""
    from mlflow_xai.plugins import DISABLE_ENV, get_registry

    note = None
    try:
        registry = get_registry()
    except Exception as exc:  # noqa: BLE001 - retried with the batched pack alone
        import importlib.metadata as md

        others = {ep.name for ep in md.entry_points(group="mlflow_xai")} - {BATCHED_PACK}
        disabled = set(filter(None, os.environ.get(DISABLE_ENV, "").split(","))) | others
        os.environ[DISABLE_ENV] = ",".join(sorted(disabled))
        note = (f"the plugin registry failed ({type(exc).__name__}: {exc}); loaded the "
                f"'{BATCHED_PACK}' pack alone")
        print(f"gpu_check: {note}", file=sys.stderr)
        registry = get_registry(reload=True)
    methods = []
    for info in registry.methods.values():
        if info.kind == "explainer":
            methods.append({**info.as_dict(), "requires_keys": list(info.requires)})
    return methods, note


def methods_in_scope(registered: list[dict[str, Any]], only: list[str] | None
                     ) -> list[dict[str, Any]]:
    """Batched methods: the torch pack's explainers (BATCHED order first) and the interaction
    methods, as registered."""
    by_name = {m["name"]: m for m in registered if m["kind"] == "explainer"}
    names = [n for n in BATCHED if n in by_name]
    names += sorted(n for n, m in by_name.items()
                    if m["plugin"] == BATCHED_PACK and n not in names)
    names += [n for n in INTERACTIONS if n in by_name and n not in names]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"gpu_check: --methods {','.join(unknown)}: not a registered "
                             f"batched method. Registered: {', '.join(names)}")
        names = [n for n in names if n in only]
    return [by_name[n] for n in names]


def plan_jobs(methods: list[dict[str, Any]], inputs: dict[str, Any], quick: bool
              ) -> list[dict[str, Any]]:
    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    jobs = []
    for m in methods:
        cls = registry.get(m["name"], "explainer").cls
        defaults = dict(getattr(cls, "defaults", {}) or {})
        params: dict[str, Any] = {}
        if quick:
            wanted = QUICK_PARAMS.get(m["name"], QUICK_FALLBACK)
            for key, value in wanted.items():
                if key in defaults and (m["name"] in QUICK_PARAMS or not isinstance(
                        defaults[key], (int, float)) or defaults[key] > value):
                    params[key] = value
        kinds = []
        if "tree" in m["requires_keys"]:
            kinds = ["tree"]
        else:
            if "tabular" in m["data"]:
                kinds.append("tabular")
            if "image" in m["data"]:
                kinds.append("image")
        for kind in kinds:
            jobs.append({"method": m["name"], "kind": kind, "params": params,
                         "requires": m["requires_keys"]})
    return jobs


def job_data(job: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "tree":
        if "tree" not in inputs:
            inputs["tree"] = tree_inputs(inputs)
        return inputs["tree"]
    return inputs[job["kind"]]


def tree_dependency_missing() -> str | None:
    """Why shap cannot be imported here (tree methods need it), or None."""
    try:
        import shap  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or numba failing inside it
        return (f"needs shap, which does not import here ({type(exc).__name__}: {exc}); "
                "shap's numba and llvmlite (~45 MB) are not carried, and tree methods read "
                "the trees on the CPU whatever the device")
    return None


def warm_job(job: dict[str, Any], device: str) -> None:
    """One untimed run of the method on 2 rows on each side: lazy imports (captum, scipy's
    QMC), CUDA kernels and library handles (cuBLAS, cuSOLVER) load before anything is timed."""
    data = job["data"]
    small = {**data, "X": data["X"][:2], "background": data["background"][:4]}
    for dev in dict.fromkeys(("cpu", device)):
        try:
            run_side({**job, "data": small}, dev)
        except Exception:  # noqa: BLE001, S110 - the timed run reports it
            pass


def check_job(job: dict[str, Any], inputs: dict[str, Any], device: str, rtol: float,
              repeat: int, perturb_method: str | None, warm: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"method": job["method"], "data": job["kind"],
                           "params": job["params"]}
    if job["kind"] == "tree" and (why := tree_dependency_missing()):
        return {**row, "result": "skipped", "reason": why}
    job = {**job, "data": job_data(job, inputs)}
    if warm:
        warm_job(job, device)
    sides = {}
    for side, dev in (("cpu", "cpu"), ("device", device)):
        runs = []
        for _ in range(max(1, repeat)):
            try:
                runs.append(run_side(job, dev))
            except Exception as exc:  # noqa: BLE001 - reported in the table, exit 1
                return {**row, "result": "error",
                        "reason": f"{side} ({dev}): {type(exc).__name__}: {str(exc)[:300]}"}
        first = runs[0]
        first["seconds"] = min(r["seconds"] for r in runs if r["seconds"] is not None)
        sides[side] = first
    ref, dev_side = sides["cpu"], sides["device"]
    if job["kind"] == "tabular" and ref["status"] == "skipped" and dev_side["status"] == "skipped":
        # A method limited in features (exact_shap: <= 14): the narrow variant.
        return check_job({**job, "kind": "tabular_narrow", "data": None}, inputs, device, rtol,
                         repeat, perturb_method, warm)
    if ref["status"] != "ok" or dev_side["status"] != "ok":
        reason = "; ".join(f"{s}: {v['status']} {v.get('reason') or v.get('error') or ''}"
                           for s, v in sides.items())
        result = "skipped" if {ref["status"], dev_side["status"]} == {"skipped"} else "error"
        return {**row, "data": job["kind"], "result": result, "reason": reason.strip()}
    if perturb_method == job["method"]:
        perturb(dev_side["arrays"])
    cmp = compare(ref["arrays"], dev_side["arrays"], rtol)
    cpu_s, dev_s = ref["seconds"], dev_side["seconds"]
    return {**row, "data": job["kind"], "result": "match" if cmp["matched"] else "MISMATCH",
            "reason": "; ".join(cmp["problems"]), "max_abs_diff": cmp["max_abs"],
            "max_rel_diff": cmp["max_rel"], "worst_array": cmp["worst"],
            "scale": cmp["scale"], "arrays": cmp["arrays"],
            "cpu_s": cpu_s, "device_s": dev_s,
            "speedup": round(cpu_s / dev_s, 2) if cpu_s and dev_s else None,
            "cpu_peak_mb": ref["peak_memory_mb"], "device_peak_mb": dev_side["peak_memory_mb"],
            "model_evals": ref["model_evals"], "device_model_evals": dev_side["model_evals"],
            "cpu_batch_rows": ref["batch_rows"], "device_batch_rows": dev_side["batch_rows"]}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def markdown(report: dict[str, Any]) -> str:
    env, dev_name = report["environment"], report["device_label"]
    rows = report["rows"]
    matched = [r for r in rows if r["result"] == "match"]
    failed = [r for r in rows if r["result"] in ("MISMATCH", "error")]
    lines = [
        f"## GPU check: batched methods on {dev_name} vs the CPU",
        "",
        f"- date: {report['date']}; total run time {report['total_s']:.0f} s",
        (f"- machine: {env['device_name']}; {env['cpu_count']} CPU cores, torch threads "
        f"{env['torch_threads']}; Python {env['python']}, torch {env['torch']} "
        f"(CUDA {env['cuda'] or 'none'}), numpy {env['numpy']}, mlflow-xai {env['mlflow_xai']}"),
        f"- command: `{report['command']}`" + (" (--quick sizes)" if report["quick"] else ""),
        (f"- inputs: {report['inputs']['tabular']}; {report['inputs']['image']}; "
        f"{report['inputs']['tabular_narrow']}; seeds: {report['inputs']['seeds']}"),
        (f"- tolerance: a method matches when, for every array it returns (values, base values, "
        f"standard errors, interactions; and the class each row was explained for), "
        f"max \\|{dev_name} - cpu\\| "
        f"<= {report['rtol']:g} x max \\|cpu value\\| (the table shows the array furthest "
        f"off relative to its own scale); float32 models, {report['precision']}"),
        (f"- timings: the explainer's own seconds as `summary.json` records them (min of "
        f"{report['repeat']} run(s), after an untimed 2-row run of the method on each side "
        "that loads lazy imports and CUDA kernels); peak memory: CPU = "
        "process RSS (torch and all, not the method's increment), CUDA = allocator peak during "
        "the method"),
        f"- result: **{len(matched)} of {len(rows)} matched**"
        + (f"; differ or failed: {', '.join(r['method'] + ' (' + r['data'] + ')' for r in failed)}"
           if failed else "")
        + (f"; skipped: {', '.join(r['method'] for r in rows if r['result'] == 'skipped')}"
           if any(r["result"] == "skipped" for r in rows) else "")
        + ("" if report.get("complete", True) else
           f"; **incomplete: {len(rows)} of {report.get('jobs_planned', '?')} checks done**"),
        "",
        (f"| method | data | parameters | result | max abs diff | max rel diff | CPU s | "
        f"{dev_name} s | speed-up | CPU RSS peak MB | {dev_name} peak MB | model evals |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        result = r["result"] if r["result"] == "match" else f"**{r['result']}**"
        lines.append(
            f"| {r['method']} | {r['data']} | {_params(r['params'])} | {result} | "
            f"{_fmt(r.get('max_abs_diff'))} | {_fmt(r.get('max_rel_diff'))} | "
            f"{_fmt(r.get('cpu_s'))} | {_fmt(r.get('device_s'))} | "
            f"{_fmt(r.get('speedup'))}{'x' if r.get('speedup') else ''} | "
            f"{_fmt(r.get('cpu_peak_mb'))} | {_fmt(r.get('device_peak_mb'))} | "
            f"{_fmt(r.get('model_evals'))} |")
    notes = [r for r in rows if r.get("reason")]
    if notes or report.get("registry_note"):
        lines += ["", "Notes:", ""]
        lines += [f"- {r['method']} ({r['data']}): {r['reason']}" for r in notes]
        if report.get("registry_note"):
            lines.append(f"- {report['registry_note']}")
    if report.get("bootstrap", {}).get("installed"):
        installed = ", ".join(report["bootstrap"]["installed"])
        lines += ["", f"Installed from carried wheels: {installed}."]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], md: str, results: Path | None,
                  json_path: Path | None, quiet: bool = False) -> None:
    if results is not None:
        from results_file import replace_section

        replace_section(results, START_MARK, END_MARK, md)
        print(f"gpu_check: wrote the table into {results}")
    targets = [json_path] if json_path else []
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        targets.append(out / "gpu_check.json")
        (out / "gpu_check.md").write_text(md)
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str))
        if not quiet:
            print(f"gpu_check: wrote {path}")


# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and budgets (smoke run)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="without CUDA, run both sides on the CPU (to test this script)")
    p.add_argument("--device", default="cuda", help="the device compared with the CPU")
    p.add_argument("--wheels", type=Path, default=None,
                   help="folder of carried wheels (scripts/gpu_wheels.sh) for missing packages")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="max |diff| / max |cpu value| allowed per array (default 1e-4)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per side (min is kept)")
    p.add_argument("--max-seconds", type=float, default=270,
                   help="methods not started by then are reported as not run (exit 1), so "
                        "that the check ends within the device limit (default 270; 0: none)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the untimed 2-row run of each method on each side")
    p.add_argument("--tf32", action="store_true", help="leave TF32 on (default: off)")
    p.add_argument("--results", type=Path, default=None,
                   help="RESULTS.md to update (default benchmarks/RESULTS.md on a CUDA run; "
                        "an --allow-cpu run writes none unless given)")
    p.add_argument("--no-results", action="store_true", help="do not write any RESULTS.md")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here "
                   "($OUT/gpu_check.json and .md are written whenever OUT is set)")
    p.add_argument("--render", type=Path, default=None,
                   help="do not run: write the table of a gpu_check.json (from the GPU machine) "
                        "into RESULTS.md")
    p.add_argument("--perturb-for-test", default=None, metavar="METHOD",
                   help="tests only: add noise to the device side of METHOD (must exit 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.render is not None:
        if str(BENCH) not in sys.path:
            sys.path.insert(0, str(BENCH))
        report = json.loads(args.render.read_text())
        md = markdown(report)
        print(md)
        write_outputs(report, md, None if args.no_results else (args.results or RESULTS), None)
        return 0

    disabled = set(filter(None, os.environ.get("MLFLOW_XAI_DISABLE_PLUGINS", "").split(",")))
    os.environ["MLFLOW_XAI_DISABLE_PLUGINS"] = ",".join(sorted(disabled | set(UNUSED_PACKS)))
    os.environ.setdefault("MLFLOW_XAI_PROGRESS", "0")
    boot = bootstrap(args.wheels)
    if boot["installed"]:
        print(f"gpu_check: installed from {args.wheels}: {', '.join(boot['installed'])}")
    if boot["missing"]:
        print(f"gpu_check: not importable: {', '.join(boot['missing'])} (methods that need "
              "them will fail; carry them with --wheels, see scripts/gpu_wheels.sh)",
              file=sys.stderr)

    import warnings

    import numpy as np
    import torch

    # Captum warns on every DeepLift call (hooks on non-linear modules, grads set on inputs).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"captum(\.|$)")
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        if not args.allow_cpu:
            print(f"gpu_check: CUDA is not available (torch {torch.__version__}, built with "
                  f"CUDA {torch.version.cuda or 'no'}); nothing to compare. Run it on the GPU "
                  "machine, or pass --allow-cpu to run both sides on the CPU (a test of this "
                  "script, not of the GPU).", file=sys.stderr)
            return 2
        device = "cpu"
    precision = set_precision(args.tf32)

    import mlflow_xai

    registered, registry_note = load_registered()
    only = [s.strip() for s in args.methods.split(",")] if args.methods else None
    methods = methods_in_scope(registered, only)
    if not methods:
        from mlflow_xai.plugins import get_registry

        print(f"gpu_check: no batched method is registered (packs that failed to load: "
              f"{get_registry().failed or 'none'}{'; ' + registry_note if registry_note else ''})",
              file=sys.stderr)
        return 1
    size = SIZES["quick" if args.quick else "full"]
    inputs = make_inputs(size)
    warm_up(inputs, device)
    jobs = plan_jobs(methods, inputs, args.quick)
    dev_label = "CUDA" if device.startswith("cuda") else f"{device} (2nd run)"
    print(f"gpu_check: {len(jobs)} checks of {len(methods)} methods, cpu vs {device}"
          f"{' (--quick)' if args.quick else ''}", flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "numpy": np.__version__,
           "mlflow_xai": mlflow_xai.__version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(),
           "device_name": (torch.cuda.get_device_name(0) if device.startswith("cuda")
                           else f"no GPU ({platform.processor() or platform.machine()})")}
    rows: list[dict[str, Any]] = []
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/gpu_check.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:])),
        "quick": args.quick, "device": device, "device_label": dev_label,
        "rtol": args.rtol, "repeat": args.repeat, "precision": precision,
        "environment": env, "bootstrap": boot,
        "inputs": {k: v["describe"] for k, v in inputs.items() if isinstance(v, dict)}
        | {"seeds": inputs["_rng_note"]},
        "methods_registered": [m["name"] for m in methods], "registry_note": registry_note,
        "rows": rows, "jobs_planned": len(jobs), "total_s": 0.0, "complete": False,
    }
    for job in jobs:
        t0 = time.perf_counter()
        if args.max_seconds and t0 - started > args.max_seconds:
            row = {"method": job["method"], "data": job["kind"], "params": job["params"],
                   "result": "error", "reason": f"not run: the check passed --max-seconds "
                                                f"{args.max_seconds:g}"}
        else:
            row = check_job(job, inputs, device, args.rtol, args.repeat,
                            args.perturb_for_test, warm=not args.no_warmup)
        rows.append(row)
        print(f"  {row['method']:<22} {row['data']:<15} {row['result']:<9} "
              f"rel {_fmt(row.get('max_rel_diff'))}  cpu {_fmt(row.get('cpu_s'))} s  "
              f"{device} {_fmt(row.get('device_s'))} s  ({time.perf_counter() - t0:.1f} s)"
              + (f"  {row['reason']}" if row.get("reason") else ""), flush=True)
        report["total_s"] = time.perf_counter() - started
        if os.environ.get("OUT"):  # what a run stopped at its limit still brings back
            write_outputs(report, markdown(report), None, None, quiet=True)
    report["inputs"] = ({k: v["describe"] for k, v in inputs.items() if isinstance(v, dict)}
                        | {"seeds": inputs["_rng_note"]})
    report["total_s"] = time.perf_counter() - started
    report["complete"] = True
    md = markdown(report)
    print()
    print(md)
    results = None
    if not args.no_results:
        results = args.results or (RESULTS if device.startswith("cuda") else None)
    write_outputs(report, md, results, args.json)
    bad = [r for r in rows if r["result"] in ("MISMATCH", "error")]
    if bad:
        print("gpu_check: FAILED: " + "; ".join(
            f"{r['method']} ({r['data']}): {r['result']}: {r.get('reason', '')}" for r in bad),
            file=sys.stderr)
        return 1
    print(f"gpu_check: OK, {sum(r['result'] == 'match' for r in rows)} of {len(rows)} matched"
          f" in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
