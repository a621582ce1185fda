"""The job form: job templates (which fields each kind asks for), the spec a filled form makes, and
where the coordinator's validation error belongs on the form.

The console does not validate a spec itself: it sends what the analyst filled in, and the
coordinator's answer (``InvalidJobSpec`` and its kin: ``"inputs: tax has no dataset 'x'"``) is shown
next to the field it names — so the form and the CLI refuse the same specs with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from console.i18n import N_


@dataclass(frozen=True)
class JobTemplate:
    """One kind of job the bank's analyst can start from the console."""

    kind: str
    title: str
    needs_label: bool
    params: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)


#: The job templates, in the order the form offers them.
TEMPLATES: dict[str, JobTemplate] = {
    "vertical_train": JobTemplate(
        "vertical_train", N_("Joint credit model (PSI, then training)"), needs_label=True,
        params=("algorithm", "epochs", "batch_size", "test_fraction"),
        defaults={"algorithm": "ss_lr", "epochs": "2", "batch_size": "256", "test_fraction": "0.3"}),
    "psi": JobTemplate("psi", N_("Private set intersection (shared customers)"), needs_label=False),
}
ALGORITHMS = {"ss_lr": N_("Secret-shared logistic regression"), "sgb": N_("Secure gradient boosting")}
#: Form fields an error can be shown next to; "form" is the whole form.
FIELDS = ("kind", "purpose", "join_key", "datasets", "label", "params", "expires_in_h", "max_runs", "form")


@dataclass
class JobForm:
    """What the analyst filled in (strings, as the browser sent them)."""

    kind: str = "vertical_train"
    purpose: str = ""
    join_key: str = "uscc"
    datasets: list[str] = field(default_factory=list)
    """``member/dataset`` of every chosen dataset."""
    columns: dict[str, list[str]] = field(default_factory=dict)
    """``member/dataset`` -> chosen columns."""
    label: str = ""
    """``member/dataset/column``."""
    params: dict[str, str] = field(default_factory=dict)
    expires_in_h: str = "24"
    max_runs: str = "1"

    @property
    def template(self) -> JobTemplate:
        return TEMPLATES.get(self.kind, TEMPLATES["vertical_train"])

    @classmethod
    def from_form(cls, data: Any) -> JobForm:
        """From a submitted form (a Starlette ``FormData``: ``getlist`` for repeated fields)."""
        kind = str(data.get("kind") or "vertical_train")
        datasets = [str(d) for d in data.getlist("dataset")]
        tpl = TEMPLATES.get(kind, TEMPLATES["vertical_train"])
        return cls(
            kind=kind, purpose=str(data.get("purpose") or ""), join_key=str(data.get("join_key") or "").strip(),
            datasets=datasets, columns={d: [str(c) for c in data.getlist(f"columns:{d}")] for d in datasets},
            label=str(data.get("label") or ""),
            params={p: str(data.get(p) or "").strip() for p in tpl.params},
            expires_in_h=str(data.get("expires_in_h") or "").strip(), max_runs=str(data.get("max_runs") or "").strip(),
        )

    @classmethod
    def blank(cls, kind: str) -> JobForm:
        tpl = TEMPLATES.get(kind, TEMPLATES["vertical_train"])
        return cls(kind=tpl.kind, params=dict(tpl.defaults))

    def to_spec(self, requester: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The job spec this form asks for, and the fields the console could not even read (a number
        that is not one); the coordinator validates the rest."""
        errors: dict[str, str] = {}
        spec: dict[str, Any] = {"kind": self.kind, "requester": requester, "purpose": self.purpose,
                                "join_key": self.join_key or None, "inputs": []}
        label = None
        if self.template.needs_label and self.label:
            member, dataset, column = (self.label.split("/", 2) + ["", ""])[:3]
            label = {"member": member, "dataset": dataset, "column": column}
            spec["label"] = label
        for ref in self.datasets:
            member, _, dataset = ref.partition("/")
            columns = self.columns.get(ref, [])
            if label is not None and (label["member"], label["dataset"]) == (member, dataset):
                columns = [c for c in columns if c != label["column"]]  # the label is never a feature
            spec["inputs"].append({"member": member, "dataset": dataset, "columns": columns})
        if self.kind == "vertical_train":
            params: dict[str, Any] = {}
            for name, conv in (("epochs", int), ("batch_size", int), ("test_fraction", float)):
                raw = self.params.get(name, "")
                if raw:
                    try:
                        params[name] = conv(raw)
                    except ValueError:
                        errors["params"] = N_("Parameters must be numbers.")
            spec["model"] = {"algorithm": self.params.get("algorithm") or "ss_lr", "params": params}
        for name, key, conv, scale in (("expires_in_h", "expires_in_s", float, 3600), ("max_runs", "max_runs", int, 1)):
            raw = getattr(self, name)
            if raw:
                try:
                    spec[key] = int(conv(raw) * scale)
                except ValueError:
                    errors[name] = N_("Enter a whole number.")
        return {k: v for k, v in spec.items() if v is not None}, errors


def error_field(detail: str) -> str:
    """The form field a coordinator error is about: its ``field:`` prefix (``inputs.0.columns: …``),
    else the words it uses, else the whole form."""
    head, sep, rest = detail.partition(":")
    where = head.strip().split(".")[0] if sep and " " not in head.strip() else ""
    by_prefix = {"kind": "kind", "purpose": "purpose", "join_key": "join_key", "inputs": "datasets",
                 "label": "label", "model": "params", "expires_in_s": "expires_in_h", "expiry": "expires_in_h",
                 "max_runs": "max_runs", "requester": "form", "outputs": "form"}
    if where == "inputs" and "join key" in rest:
        return "join_key"
    if where == "inputs" and "label" in rest:
        return "label"
    if where in by_prefix:
        return by_prefix[where]
    text = (rest if where == "spec" else detail).lower()
    for words, name in ((("label",), "label"), (("join key", "join_key"), "join_key"),
                        (("dataset", "member", "inputs", "column"), "datasets"),
                        (("epochs", "batch", "sigmoid", "param", "algorithm"), "params"), (("expir",), "expires_in_h")):
        if any(w in text for w in words):
            return name
    return "form"
