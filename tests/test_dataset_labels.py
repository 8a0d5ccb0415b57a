"""Checks and labels follow the dataset: class names in legends (Figure 6a), class checks
refused on unlabeled data (CelebA, STL-10: labels -1) instead of a meaningless 1.00."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fa_utils import experiments, plotting  # noqa: E402
from fa_utils.data import DATASETS  # noqa: E402


def _colourbar_labels(fig):
    axes = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    return axes, [t.get_text() for t in axes[0].get_yticklabels()] if axes else []


@pytest.mark.parametrize("dataset, first, last", [("mnist", "digit 0", "digit 9"),
                                                  ("cifar10", "airplane", "truck")])
def test_figure_6a_colour_bar_names_the_dataset_classes(dataset, first, last):
    z, labels = torch.randn(50, 2), torch.arange(50) % 10
    fig, ax = plt.subplots()
    plotting.scatter_latents(ax, z, labels, class_names=DATASETS[dataset].class_names)
    bars, names = _colourbar_labels(fig)
    assert len(bars) == 1 and names[0] == first and names[-1] == last and len(names) == 10
    plt.close(fig)


@pytest.mark.parametrize("dataset", ["celeba", "stl10"])
def test_unlabeled_latents_have_one_colour_and_no_class_bar(dataset):
    assert DATASETS[dataset].class_names == () and DATASETS[dataset].num_classes is None
    fig, ax = plt.subplots()
    plotting.scatter_latents(ax, torch.randn(20, 2), torch.full((20,), -1),
                             class_names=DATASETS[dataset].class_names)
    bars, _ = _colourbar_labels(fig)
    assert bars == [] and [t.get_text() for t in ax.get_legend().get_texts()] == ["unlabeled images"]
    plt.close(fig)


def test_class_separation_refuses_unlabeled_or_single_class_data():
    z = torch.randn(30, 2)
    with pytest.raises(ValueError, match="unlabeled"):
        experiments.class_separation(z, torch.full((30,), -1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        experiments.class_separation(z, torch.zeros(30, dtype=torch.long))
    labels = torch.arange(30) % 2
    z[labels == 1] += 10.0  # two far-apart groups: perfectly separated
    assert experiments.class_separation(z, labels) == 1.0
