import importlib
import inspect
import pkgutil

import pytest

import npattention
from npattention import Linear, Module, backend, check_function, gradcheck
from npattention.backend import xp
from npattention.gradcheck import FunctionModule, registered, run_registered

REGISTRY = registered()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_registered_module_passes_gradcheck(name):
    reports = run_registered(name)
    assert len(reports) >= 2, f"{name}: register at least two shapes"
    for report in reports:
        assert report.passed, str(report)
        assert report.worst_rel_error < 1e-4, str(report)


def _package_module_classes():
    for info in pkgutil.walk_packages(npattention.__path__, "npattention."):
        if info.name.startswith(("npattention.demos", "npattention.__main__")):
            continue
        mod = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, Module) and cls.__module__ == mod.__name__:
                yield cls


def test_every_module_in_the_package_is_registered():
    missing = sorted(
        {cls.__name__ for cls in _package_module_classes()
         if cls not in (Module, FunctionModule) and not cls.__dict__.get("gradcheck_exempt")} - set(REGISTRY)
    )
    assert missing == [], f"register gradcheck cases for {missing} in npattention/gradcheck_cases/"


class BrokenLinear(Linear):
    """Linear whose backward forgets to transpose nothing but drops the bias gradient."""

    def backward(self, grad_output):
        dx = super().backward(grad_output)
        self.bias.grad[...] = 0  # wrong: the bias gradient is lost
        return dx * 1.01  # wrong: input gradient off by 1 %


def test_broken_backward_is_caught():
    report = gradcheck(BrokenLinear(3, 2), (backend.Generator(1).normal((4, 3)),))
    assert not report.passed
    verdicts = {r.name: r.passed for r in report.rows}
    assert verdicts == {"input[0]": False, "weight": True, "bias": False}
    assert 0.009 < report.rows[0].max_rel_error < 0.011
    assert "FAIL" in str(report)


def test_report_rows_and_verdict():
    report = gradcheck(Linear(3, 2), (backend.Generator(1).normal((4, 3)),))
    assert report.passed and bool(report)
    assert [r.name for r in report.rows] == ["input[0]", "weight", "bias"]
    assert [r.checked for r in report.rows] == [12, 6, 2]
    assert report.worst_rel_error < 1e-6


def test_random_subset_of_entries():
    report = gradcheck(Linear(50, 40), (backend.Generator(1).normal((8, 50)),), max_entries=25)
    assert [r.checked for r in report.rows] == [25, 25, 25]
    assert report.passed


def test_nondifferentiable_inputs_are_skipped():
    def fwd(x, idx):
        return x[idx], (x.shape, idx)

    def bwd(dout, cache):
        shape, idx = cache
        dx = xp.zeros(shape)
        backend.add_at(dx, idx, dout)
        return dx

    x = backend.Generator(2).normal((5, 3))
    idx = xp.asarray([0, 3, 3, 1])
    report = check_function(fwd, bwd, (x, idx))
    assert report.passed and [r.name for r in report.rows] == ["input[0]"]


def test_function_pair_with_wrong_gradient_fails():
    report = check_function(lambda x: (xp.sin(x), x), lambda d, x: d * xp.sin(x),
                            (backend.Generator(3).normal((3, 3)),))
    assert not report.passed


def test_wrong_number_of_gradients_is_reported():
    module = FunctionModule(lambda a, b: (a * b, (a, b)), lambda d, c: d * c[1])
    g = backend.Generator(0)
    with pytest.raises(ValueError, match="returned 1 gradient"):
        gradcheck(module, (g.normal((2,)), g.normal((2,))))


def test_a_fail_row_names_its_worst_entry():
    """The report says where a check failed: the index and the analytic/numerical pair."""
    report = gradcheck(BrokenLinear(3, 2), (backend.Generator(1).normal((4, 3)),))
    bias = report.rows[2]
    assert bias.worst_analytic == 0.0 and abs(bias.worst_numerical) > 0.1  # the dropped bias gradient
    assert bias.worst_index in [(0,), (1,)]
    x = report.rows[0]  # input gradient scaled by 1.01: analytic = 1.01 * numerical at the worst entry
    assert abs(x.worst_analytic / x.worst_numerical - 1.01) < 1e-6 and len(x.worst_index) == 2
    assert f"{bias.worst_index[0]},): analytic 0 vs numerical" in str(report)
