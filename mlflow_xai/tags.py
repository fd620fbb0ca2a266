"""Every tag name mlflow-xai writes, in one place.

Tags are written by the recorder (run, LoggedModel, model version) and by the watch service.
They are *labels for people and the UI*, never facts for the gate: anyone who can write to a run
can write a tag. The gate reads the ``xai/`` artifacts and checks them against ``DIGEST``
(and ``SIGNATURE`` when a signing key is configured).
"""

from __future__ import annotations

PREFIX = "mlflow_xai"
STATUS = f"{PREFIX}.status"  # ok | failed | skipped
ERROR = f"{PREFIX}.error"  # why it failed
REASON = f"{PREFIX}.reason"  # why it was skipped
METHODS = f"{PREFIX}.methods"  # comma-separated explainers that ran
GOVERNANCE = f"{PREFIX}.governance"  # passed | failed (written by the gate or a policy)
RUN_ID = f"{PREFIX}.run_id"  # on a LoggedModel: the run holding its xai/ folder
MODEL_ID = f"{PREFIX}.model_id"  # on a run / model version: the explained LoggedModel
SOURCE = f"{PREFIX}.source"  # which entrance recorded it (autolog, evaluate, cli, watch)
DIGEST = f"{PREFIX}.digest"  # SHA-256 of xai/summary.json (see mlflow_xai.provenance)
SIGNATURE = f"{PREFIX}.signature"  # HMAC-SHA256(MLFLOW_XAI_SIGNING_KEY, digest)

# The watch service's own state (sealed with an HMAC; see mlflow_xai.watch).
WATCH = f"{PREFIX}.watch"  # running | interrupted | done | failed | skipped
WATCH_OWNER = f"{WATCH}.owner"  # host:pid:token of the watcher
WATCH_TIME = f"{WATCH}.time"  # when the state was written (epoch seconds)
WATCH_REASON = f"{WATCH}.reason"  # why a model was skipped
WATCH_ATTEMPT = f"{WATCH}.attempt"  # which claim attempt the state belongs to
WATCH_SEAL = f"{WATCH}.seal"  # HMAC over the values above
