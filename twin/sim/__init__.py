"""SimPy side of the twin: plain generator processes (dispatch, incidents, repairs, uplinks).

Must not import: numba, twin.kernels (kernels get arrays; SimPy never enters a kernel).
"""
