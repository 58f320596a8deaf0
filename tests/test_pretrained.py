"""The weights the IAM CPU recipe starts from ship with the repository and fit the recipe's network."""

import torch
import yaml

from htr.alphabet import Alphabet
from htr.lit_module import read_init_source
from htr.models import CRNN
from htr.models.transfer import load_transferred
from tests.helpers import REPO_ROOT

RECIPE = REPO_ROOT / "configs" / "iam_lines_cpu.yaml"


def test_recipe_starts_from_shipped_weights_that_fit_its_network():
    model = yaml.safe_load(RECIPE.read_text())["model"]
    weights = REPO_ROOT / model["init_from"]
    assert weights.is_file() and weights.stat().st_size <= 10 * 2**20  # ships with the package
    charset, state = read_init_source(str(weights))
    net = CRNN(Alphabet(charset).num_classes, **model["net"]["init_args"])
    load_transferred(net, charset, state, charset)
    assert net.state_dict().keys() == state.keys()  # the shortcut head included: the same architecture
    assert all(torch.equal(tensor, state[name]) for name, tensor in net.state_dict().items())
