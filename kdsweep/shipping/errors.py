"""Why a model could not be exported: the exporters' many exception types as one, naming the operator."""

from __future__ import annotations


class NotExportable(Exception):
    """The exporter refused the model. `operator` is the one it could not translate, when it says."""

    def __init__(self, format_name: str, operator: str | None, detail: str) -> None:
        self.format_name = format_name
        self.operator = operator
        self.detail = detail
        what = f"operator {operator} has no {format_name} translation" if operator else detail
        super().__init__(f"cannot export to {format_name}: {what}")
