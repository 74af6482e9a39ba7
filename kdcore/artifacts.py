"""Names of the files a job leaves in its output folder: kdcore writes them, the service lists and serves them.

No torch import: the API imports this on the request path.
"""

from __future__ import annotations

# The weights of each trained model (the student is the deliverable).
WEIGHTS = {"teacher": "teacher.safetensors", "student_baseline": "baseline.safetensors",
           "student_kd": "student.safetensors"}
RESULTS = "results.json"
REPORT = "report.html"
ONNX = "student.onnx"
TORCHSCRIPT = "student.ts"
# What a user can download, in the order listings show it.
ARTIFACT_NAMES = (WEIGHTS["student_kd"], ONNX, TORCHSCRIPT, WEIGHTS["teacher"], WEIGHTS["student_baseline"],
                  RESULTS, REPORT)
MEDIA_TYPES = {RESULTS: "application/json", REPORT: "text/html; charset=utf-8"}
