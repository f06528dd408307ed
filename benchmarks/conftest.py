"""Print the machine and library versions at the top of a benchmark run."""

import _manifold_cases as mc


def pytest_report_header(config):
    mc.setup_torch()
    return mc.header_lines()
