"""Contract checks for plugin authors: run vqtk's own checks on your component in your test suite.

Like pytest's ``pytester``, these are what vqtk's built-ins are tested with::

    from vqtk.registry import Registry
    from vqtk import testing
    import my_plugin

    def test_my_quantizer():
        registry = testing.registry_with(my_plugin)          # the built-ins + your plugin
        testing.check_component(registry, "quantizer", "mine", {"dim": 8, "codebook_size": 16})

    def test_my_loss_resumes_exactly(tmp_path):
        registry = testing.registry_with(my_plugin)
        recipe = testing.tiny_recipe(loss={"mine": {"type": "mine", "weight": 0.1}})
        testing.check_resume_exact(recipe, tmp_path, registry=registry)

:func:`check_component` structures a recipe table through the real strict
structuring (so a field your signature cannot express fails here, not in a
user's run), builds the component as a run would, then checks the contract of
its kind: shapes and dtypes, gradients flowing, and a state round trip through
a real checkpoint. :func:`check_resume_exact` trains a tiny real run straight
through and again with a stop and ``--resume`` in the middle, and asserts that
every tensor of the two final checkpoints is identical.
"""

from vqtk.testing.contracts import (
    check_component,
    check_decoder,
    check_discriminator,
    check_encoder,
    check_loss,
    check_prior,
    check_quantizer,
    check_state_round_trip,
    structure_table,
)
from vqtk.testing.runs import check_resume_exact, registry_with, tiny_recipe

__all__ = [
    "check_component",
    "check_decoder",
    "check_discriminator",
    "check_encoder",
    "check_loss",
    "check_prior",
    "check_quantizer",
    "check_resume_exact",
    "check_state_round_trip",
    "registry_with",
    "structure_table",
    "tiny_recipe",
]
