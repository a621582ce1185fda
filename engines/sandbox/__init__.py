"""The sandbox engine (数据沙盒): a researcher's reviewed code, run isolated on one department's data.

Coordinator side :class:`engines.sandbox.coordinator.SandboxEngine`, node side
:class:`engines.sandbox.node.SandboxNodeEngine`, and the bridge that turns a PySyft low side's code
requests into jobs and deposits their results back (:mod:`engines.sandbox.bridge`).
"""
