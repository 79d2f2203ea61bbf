"""The docstrings' examples written as doctests (``>>>``) run, so that an example the docs show cannot
rot. (Examples that need engines and data stay code blocks; the tutorial and README code run in
tests/test_examples.py.)"""
import doctest
import importlib
import pkgutil

import pytest

import monitor


def modules_with_doctests():
    names = [info.name for info in pkgutil.walk_packages(monitor.__path__, "monitor.")]
    return [name for name in names if ">>>" in (importlib.util.find_spec(name).loader.get_source(name) or "")]


def test_the_pure_layers_have_runnable_examples():
    found = modules_with_doctests()
    assert {"monitor.core.objective", "monitor.store.layout", "monitor.diagnosis.rules", "monitor.review.text"} <= set(found)


@pytest.mark.parametrize("name", modules_with_doctests())
def test_the_examples_in_the_docstrings_of(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [test for test in finder.find(module) if test.examples]
    assert tests
    for test in tests:
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name} (the output above says which)"
